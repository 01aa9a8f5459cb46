"""An npm-protocol registry client: the package document, dist-tags and tarballs."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from desktop.core.download import Cancel, Fetcher, Integrity, Progress, check_url
from desktop.core.errors import RegistryError
from desktop.core.registry import Listing, Release
from desktop.core.state import atomic_write_json, read_json_object
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"


class NpmRegistry:
    """Reads `dist-tags[channel]` from a package document at `url` (`http://host/<package>`).

    The document and its ETag are cached in the data dir, so an up-to-date check is
    one conditional request answered 304.
    """

    def __init__(self, url: str, fetcher: Fetcher, cache_dir: Path) -> None:
        self.url = check_url(url)
        self.fetcher = fetcher
        self.cache_file = cache_dir / f"npm-{hashlib.sha256(url.encode()).hexdigest()[:24]}.json"

    def list_releases(self, channel: str) -> Listing:
        cached = read_json_object(self.cache_file)
        cached_doc = cached.get("document") if cached else None
        etag = cached.get("etag") if cached and isinstance(cached_doc, dict) else None
        document, parsed = self.fetcher.get_json(
            self.url, accept=ACCEPT, etag=etag if isinstance(etag, str) else None)
        if document.not_modified and isinstance(cached_doc, dict):
            doc: dict[str, Any] = cached_doc
        else:
            if not isinstance(parsed, dict):
                raise RegistryError(f"registry answer from {self.url} is not a package document")
            doc = parsed
            if document.etag:
                atomic_write_json(self.cache_file, {"etag": document.etag, "document": doc})
        releases = self._releases(doc, channel)
        return Listing(releases, not_modified=document.not_modified, bytes_received=len(document.body))

    def _releases(self, doc: dict[str, Any], channel: str) -> tuple[Release, ...]:
        tags = doc.get("dist-tags")
        versions = doc.get("versions")
        if not isinstance(tags, dict) or not isinstance(versions, dict):
            raise RegistryError(f"package document at {self.url} has no dist-tags/versions")
        tagged = tags.get(channel)
        if tagged is None:
            raise RegistryError(f"package document at {self.url} has no dist-tag {channel!r}")
        version = parse_version(tagged)
        if version is None:
            return ()
        meta = versions.get(tagged)
        if not isinstance(meta, dict):
            raise RegistryError(f"dist-tag {channel!r} names {tagged}, which the document does not list")
        dist = meta.get("dist")
        if not isinstance(dist, dict) or not isinstance(dist.get("tarball"), str):
            raise RegistryError(f"version {tagged} has no dist.tarball")
        integrity = Integrity.parse(dist.get("integrity"), dist.get("shasum"))
        if integrity is None:
            raise RegistryError(f"version {tagged} has no usable integrity or shasum")
        runtime_meta = meta.get("runtime")
        runtime: dict[str, Any] = runtime_meta if isinstance(runtime_meta, dict) else {}
        size = dist.get("size")
        return (Release(
            version=version,
            url=dist["tarball"],
            integrity=integrity,
            size=size if isinstance(size, int) and size > 0 else None,
            channel=channel,
            requires_shell=_str_or_none(runtime.get("requires_shell")),
            notes=str(meta.get("description") or ""),
            published=str((doc.get("time") or {}).get(tagged, "")) if isinstance(doc.get("time"), dict)
            else "",
        ),)

    def download(self, release: Release, dest: Path, *, progress: Progress | None = None,
                 cancel: Cancel | None = None) -> None:
        self.fetcher.download(release.url, dest, size=release.size, integrity=release.integrity,
                              progress=progress, cancel=cancel)

    def close(self) -> None:
        self.fetcher.close()


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
