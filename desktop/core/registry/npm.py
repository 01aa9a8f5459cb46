"""An npm-protocol registry client: the package document, dist-tags and tarballs.

The npm kind trusts the registry (TLS and the registry's own integrity field); the feed kind
is the signed one. Within that: a version must carry a sha512 `dist.integrity` (a sha1
`shasum` alone is refused), and the integrity first seen for a version is remembered, so the
registry cannot later serve this install different bytes under the same version.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from desktop.core.digests import Integrity
from desktop.core.download import Fetcher, check_url
from desktop.core.errors import RegistryError, StateError, TrustError
from desktop.core.registry import Cancel, DownloadProgress, Listing, Release
from desktop.core.state import atomic_write_json, load_fields, locked, read_json_object
from desktop.core.text import strip_credentials
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"


class NpmRegistry:
    """Reads `dist-tags[channel]` from a package document at `url` (`http://host/<package>`).

    The document and its ETag are cached in the data dir, so an up-to-date check is one
    conditional request answered 304.
    """

    def __init__(self, url: str, fetcher: Fetcher, cache_dir: Path, integrity_file: Path) -> None:
        self.url = check_url(url)
        self.fetcher = fetcher
        self.key = hashlib.sha256(url.encode()).hexdigest()[:24]
        self.cache_file = cache_dir / f"npm-{self.key}.json"
        self.integrity_file = integrity_file

    def list_releases(self, channel: str) -> Listing:
        cached = read_json_object(self.cache_file)
        cached_doc = cached.get("document") if cached else None
        etag = cached.get("etag") if cached and isinstance(cached_doc, dict) else None
        before = self.fetcher.bytes_received
        document, parsed = self.fetcher.get_json(self.url, accept=ACCEPT,
                                                 etag=etag if isinstance(etag, str) else None)
        if document.not_modified and isinstance(cached_doc, dict):
            doc: dict[str, Any] = cached_doc
        else:
            if not isinstance(parsed, dict):
                raise RegistryError("the registry's answer is not an npm package document")
            doc = parsed
        releases = self._releases(doc, channel)
        if not document.not_modified and document.etag:
            try:
                atomic_write_json(self.cache_file, {"etag": document.etag, "document": _without_credentials(doc)})
            except StateError as exc:
                log.warning("cannot cache the package document: %s", exc)
        return Listing(releases, not_modified=document.not_modified,
                       bytes_received=self.fetcher.bytes_received - before)

    def _releases(self, doc: dict[str, Any], channel: str) -> tuple[Release, ...]:
        tags = doc.get("dist-tags")
        versions = doc.get("versions")
        if not isinstance(tags, dict) or not isinstance(versions, dict):
            raise RegistryError("the package document has no dist-tags/versions")
        tagged = tags.get(channel)
        if tagged is None:
            raise RegistryError(f"the package document has no dist-tag {channel!r}")
        version = parse_version(tagged)
        if version is None:
            return ()
        meta = versions.get(tagged)
        if not isinstance(meta, dict):
            raise RegistryError(f"dist-tag {channel!r} names {tagged}, which the document does not list")
        dist = meta.get("dist")
        if not isinstance(dist, dict) or not isinstance(dist.get("tarball"), str):
            raise RegistryError(f"version {tagged} has no dist.tarball")
        integrity = Integrity.parse(dist.get("integrity"))
        if integrity is None or integrity.algorithm != "sha512":
            raise RegistryError(f"version {tagged} has no sha512 dist.integrity"
                                + (" (only a sha1 shasum)" if dist.get("shasum") else "") + "; refusing it")
        self._check_first_seen(str(version), integrity)
        runtime_meta = meta.get("runtime")
        runtime: dict[str, Any] = runtime_meta if isinstance(runtime_meta, dict) else {}
        size = dist.get("size")
        unpacked = dist.get("unpackedSize")
        times = doc.get("time")
        return (Release(
            version=version,
            url=dist["tarball"],
            integrity=integrity,
            size=size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None,
            channel=channel,
            requires_shell=_str_or_none(runtime.get("requires_shell")),
            notes=str(meta.get("description") or "")[:10_000],
            published=str(times.get(tagged, "")) if isinstance(times, dict) else "",
            unpacked_size=unpacked if isinstance(unpacked, int) and not isinstance(unpacked, bool) else None,
        ),)

    def _check_first_seen(self, version: str, integrity: Integrity) -> None:
        """Trust on first use: the bytes of a version never change for this install."""
        try:
            with locked(self.integrity_file):
                fields = load_fields(self.integrity_file)
                seen = dict(fields.mapping(self.key))
                known = seen.get(version)
                if isinstance(known, str) and known != integrity.sri:
                    raise TrustError(f"the registry now publishes different bytes for {version} than it did "
                                     "before; refusing them (publish a new version instead)")
                if known is None:
                    seen[version] = integrity.sri
                    obj = dict(fields.obj)
                    obj[self.key] = seen
                    atomic_write_json(self.integrity_file, obj)
        except StateError as exc:
            log.warning("cannot remember the integrity of %s: %s", version, exc)

    def download(self, release: Release, dest: Path, *, progress: DownloadProgress | None = None,
                 cancel: Cancel | None = None) -> int:
        return self.fetcher.download(self._with_credentials(release.url), dest, size=release.size,
                                     integrity=release.integrity, progress=progress, cancel=cancel)

    def _with_credentials(self, url: str) -> str:
        """The registry's own credentials for a tarball on the registry's host (never stored)."""
        mine, theirs = urlsplit(self.url), urlsplit(url)
        if theirs.username is None and mine.username is not None \
                and theirs.netloc == mine.netloc.rpartition("@")[2]:
            return urlunsplit(theirs._replace(netloc=mine.netloc))
        return url

    def close(self) -> None:
        self.fetcher.close()


def _without_credentials(doc: dict[str, Any]) -> dict[str, Any]:
    """The package document as cached: no credentials in any tarball URL."""
    versions = doc.get("versions")
    if not isinstance(versions, dict):
        return doc
    cleaned = dict(doc)
    cleaned["versions"] = {}
    for key, meta in versions.items():
        dist = meta.get("dist") if isinstance(meta, dict) else None
        if isinstance(dist, dict) and isinstance(dist.get("tarball"), str):
            meta = {**meta, "dist": {**dist, "tarball": strip_credentials(dist["tarball"])}}
        cleaned["versions"][key] = meta
    return cleaned


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
