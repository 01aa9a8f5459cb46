"""The feed client: a TUF repository read with tuf.ngclient, trust bootstrapped from a shipped root.

Trust: the app ships the feed's current trusted root.json (resources/root.json, or
`--trusted-root FILE`) and always hands it to ngclient as the bootstrap; newer roots found in
the cache or on the feed are verified from it, so a build that ships root N+1 never trusts a
key that root N+1 retired, even on a fresh install. Only without a shipped root does the
client fall back to a pinned key (`--public-key`), which must sign the feed's first root.
The metadata cache is keyed by the feed URL *and* the trust anchor.

Metadata goes through ngclient (refresh walks root rotations, timestamp, snapshot, targets;
expired, replayed, mix-and-match or wrongly signed metadata is refused). Targets do not: they
are downloaded by the project's own fetcher (resume, deadlines, caps, a temp name in the data
dir) and checked against the signed TUF target info (length and sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from securesystemslib.signer import SSlibKey
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.api.serialization.json import CanonicalJSONSerializer
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from desktop.core.config import AppConfig
from desktop.core.digests import Integrity
from desktop.core.download import Fetcher, check_url, raise_for_status
from desktop.core.errors import (
    DesktopError,
    DigestMismatchError,
    NetworkError,
    RegistryError,
    TrustError,
    UsageError,
)
from desktop.core.keys import parse_public_key
from desktop.core.registry import Cancel, DeltaOffer, DownloadProgress, Listing, Release
from desktop.core.state import atomic_write_bytes, ensure_dir
from desktop.core.tree import remove_tree_quietly
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

INDEX = "index.json"
MAX_ROOT_BYTES = 512 * 1024
MAX_INDEX_BYTES = 4 * 1024 * 1024


class _TufFetcher(FetcherInterface):
    """ngclient's fetcher on the project's fetcher: same URL policy, proxies, deadlines and caps."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    def _fetch(self, url: str) -> Iterator[bytes]:
        with self.fetcher.open(url) as response:
            if response.status_code != 200:
                raise tuf_errors.DownloadHTTPError(f"HTTP {response.status_code}", response.status_code)
            yield from self.fetcher.body(response, limit=self.fetcher.config.max_document_bytes,
                                         deadline=self.fetcher.config.document_deadline)


class FeedRegistry:
    """Releases from a TUF feed served at `config.registry_url`."""

    def __init__(self, config: AppConfig, fetcher: Fetcher) -> None:
        if not config.registry_url:
            raise UsageError("no feed URL configured")
        self.base = check_url(config.registry_url.rstrip("/") + "/")
        self.config = config
        self.fetcher = fetcher
        self.tuf_fetcher = _TufFetcher(fetcher)
        self.root_bytes: bytes | None = None
        self.pinned: SSlibKey | None = None
        root_file = config.shipped_root
        if root_file is not None:
            self.root_bytes = _read_root(root_file)
            anchor = hashlib.sha256(self.root_bytes).hexdigest()
        elif config.public_key:
            self.pinned = parse_public_key(config.public_key)
            anchor = hashlib.sha256(self.pinned.keyid.encode()).hexdigest()
        else:
            raise UsageError("no feed trust configured: pass --trusted-root ROOT.json or --public-key KEY")
        url_key = hashlib.sha256(self.base.encode()).hexdigest()[:16]
        self.metadata_dir = config.data.cache_dir / "tuf" / f"{url_key}-{anchor[:16]}"
        self._updater: Updater | None = None
        self._infos: dict[str, TargetFile] = {}

    # -- trust ------------------------------------------------------------------------
    def _bootstrap(self) -> bytes:
        if self.root_bytes is not None:
            return self.root_bytes
        saved = self.metadata_dir / "bootstrap-root.json"
        try:
            return saved.read_bytes()
        except OSError:
            pass
        assert self.pinned is not None
        document = self.fetcher.get_document(self.base + "metadata/1.root.json", max_bytes=MAX_ROOT_BYTES)
        md = _parse_root(document.body, "the feed's first root metadata")
        signature = md.signatures.get(self.pinned.keyid)
        if signature is None:
            raise TrustError("the feed's root metadata is not signed by the pinned key")
        try:
            self.pinned.verify_signature(signature, CanonicalJSONSerializer().serialize(md.signed))
        except Exception:  # securesystemslib raises several types for a bad signature
            raise TrustError("the feed's root metadata has a bad signature from the pinned key") from None
        atomic_write_bytes(saved, document.body)
        return document.body

    def _open(self) -> Updater:
        try:
            ensure_dir(self.metadata_dir / "targets")
        except DesktopError:
            raise
        bootstrap = self._bootstrap()
        try:
            return Updater(str(self.metadata_dir), self.base + "metadata/", str(self.metadata_dir / "targets"),
                           self.base + "targets/", fetcher=self.tuf_fetcher,
                           config=UpdaterConfig(max_root_rotations=64), bootstrap=bootstrap)
        except (tuf_errors.RepositoryError, ValueError) as exc:
            # A cache that no longer verifies from the trust anchor is dropped, not trusted.
            remove_tree_quietly(self.metadata_dir)
            raise TrustError(f"feed metadata refused: {_describe(exc)}") from None

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an ngclient call with its errors mapped to ours (ours pass through unchanged)."""
        try:
            return func(*args, **kwargs)
        except DesktopError:
            raise
        except tuf_errors.ExpiredMetadataError as exc:
            raise TrustError(f"feed metadata has expired ({_describe(exc)}); keeping the installed runtime") \
                from None
        except tuf_errors.BadVersionNumberError as exc:
            raise TrustError(f"feed metadata is older than what was already seen (rollback refused): "
                             f"{_describe(exc)}") from None
        except tuf_errors.UnsignedMetadataError as exc:
            raise TrustError(f"feed metadata is not signed by a trusted key: {_describe(exc)}") from None
        except tuf_errors.DownloadHTTPError as exc:  # the server's trouble, not the metadata's
            if exc.status_code in (408, 425, 429) or exc.status_code >= 500:
                raise NetworkError(f"{what}: the feed answered HTTP {exc.status_code}") from None
            raise RegistryError(f"{what}: the feed answered HTTP {exc.status_code}") from None
        except tuf_errors.DownloadError as exc:
            raise TrustError(f"{what}: {_describe(exc)}") from None
        except tuf_errors.RepositoryError as exc:
            raise TrustError(f"feed metadata refused: {_describe(exc)}") from None

    # -- Registry interface -------------------------------------------------------------
    def list_releases(self, channel: str) -> Listing:
        before_requests, before_bytes = self.fetcher.requests, self.fetcher.bytes_received
        updater = self._updater = self._open()
        self._call("checking the feed", updater.refresh)
        fetched_meta = self.fetcher.requests - before_requests
        releases = [release for info in self._targets(updater) if (release := self._release(info)) is not None]
        releases.sort(key=lambda r: r.version, reverse=True)
        # timestamp (plus the probe for a newer root) is all an unchanged feed costs
        return Listing(tuple(releases), not_modified=fetched_meta <= 2,
                       bytes_received=self.fetcher.bytes_received - before_bytes)

    def list_shell_releases(self, platform: str) -> Listing:
        """Shell releases (targets of kind "shell") built for `platform`; the same signed metadata."""
        before_bytes = self.fetcher.bytes_received
        updater = self._updater = self._open()
        self._call("checking the feed", updater.refresh)
        releases = [release for info in self._targets(updater)
                    if (release := _shell_release(info, platform)) is not None]
        releases.sort(key=lambda r: r.version, reverse=True)
        return Listing(tuple(releases), bytes_received=self.fetcher.bytes_received - before_bytes)

    def _targets(self, updater: Updater) -> Iterator[TargetFile]:
        """Every target the signed index lists, remembered by name (releases, and the deltas they list)."""
        index_info = self._call("reading the release index", updater.get_targetinfo, INDEX)
        if index_info is None:
            return
        for name in self._index(index_info):
            info = self._call("reading release metadata", updater.get_targetinfo, name)
            if info is not None:
                self._infos[name] = info
                yield info

    def _target_url(self, info: TargetFile) -> str:
        name = info.path
        directory, _, basename = name.rpartition("/")
        updater = self._updater
        consistent = updater is not None and updater._trusted_set.root.consistent_snapshot
        if consistent:
            digest = next(iter(info.hashes.values()))
            basename = f"{digest}.{basename}"
        path = f"{directory}/{basename}" if directory else basename
        return self.base + "targets/" + quote(path)

    def _index(self, info: TargetFile) -> list[str]:
        """The release index, checked against its signed info; cached by digest (an unchanged feed
        costs no download of it)."""
        if info.length > MAX_INDEX_BYTES:
            raise TrustError("the feed's release index is too large")
        digest = next(iter(info.hashes.values()), "")
        cached = self.metadata_dir / f"index-{digest[:64]}.json"
        data = _read_small(cached, MAX_INDEX_BYTES)
        if data is None or not _matches(info, data):
            url = self._target_url(info)
            with self.fetcher.open(url) as response:
                raise_for_status(response, url)
                data = b"".join(self.fetcher.body(response, limit=info.length,
                                                  deadline=self.fetcher.config.document_deadline))
            if not _matches(info, data):
                raise DigestMismatchError("the feed's release index does not match its signed metadata")
            for old in self.metadata_dir.glob("index-*.json"):
                old.unlink(missing_ok=True)
            atomic_write_bytes(cached, data)
        try:
            names = json.loads(data)["releases"]
        except (ValueError, KeyError, TypeError):
            raise TrustError("the feed's release index is unreadable") from None
        return [str(n) for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def _release(self, info: TargetFile) -> Release | None:
        custom = info.custom if isinstance(info.custom, dict) else {}
        if custom.get("kind", "runtime") != "runtime":
            return None
        version = parse_version(custom.get("version"))
        sha = info.hashes.get("sha256")
        integrity = Integrity.from_hex("sha256", sha) if isinstance(sha, str) else None
        if version is None or integrity is None:
            return None
        try:
            rollout = float(custom.get("rollout", 100))
        except (TypeError, ValueError):
            rollout = 100.0
        unpacked = custom.get("unpacked_size")
        requires = custom.get("requires_shell")
        return Release(
            version=version,
            url=info.path,
            integrity=integrity,
            size=info.length,
            channel=str(custom.get("channel", "stable")),
            requires_shell=requires if isinstance(requires, str) else None,
            notes=str(custom.get("notes", "")),
            rollout=rollout if 0 <= rollout <= 100 else 100.0,
            published=str(custom.get("published", "")),
            unpacked_size=unpacked if isinstance(unpacked, int) and not isinstance(unpacked, bool) else None,
            extra=_delta_facts(custom),
        )

    def delta_offers(self, release: Release) -> list[DeltaOffer]:
        """The signed deltas the feed publishes for `release`, newest base first."""
        offers: list[DeltaOffer] = []
        deltas = release.extra.get("deltas")
        for base_text, name in (deltas.items() if isinstance(deltas, dict) else ()):
            base = parse_version(base_text)
            info = self._infos.get(name) if isinstance(name, str) else None
            custom = info.custom if info is not None and isinstance(info.custom, dict) else {}
            base_files, files = custom.get("base_files_sha256"), custom.get("files_sha256")
            if info is None or base is None or custom.get("kind") != "delta" or custom.get("base") != str(base) \
                    or not isinstance(base_files, str) or files != release.extra.get("files_sha256") \
                    or not isinstance(files, str):
                continue
            offers.append(DeltaOffer(base, info.path, info.length, base_files, files))
        return sorted(offers, key=lambda offer: offer.base, reverse=True)

    def download_delta(self, offer: DeltaOffer, dest: Path, *, progress: DownloadProgress | None = None,
                       cancel: Cancel | None = None) -> int:
        info = self._infos[offer.name]
        sha = info.hashes.get("sha256")
        return self.fetcher.download(self._target_url(info), dest, size=info.length,
                                     integrity=Integrity.from_hex("sha256", sha) if isinstance(sha, str) else None,
                                     progress=progress, cancel=cancel)

    def download(self, release: Release, dest: Path, *, progress: DownloadProgress | None = None,
                 cancel: Cancel | None = None) -> int:
        info = self._infos.get(release.url)
        if info is None:
            raise TrustError(f"{release.url} is not in the signed feed metadata")
        return self.fetcher.download(self._target_url(info), dest, size=info.length,
                                     integrity=release.integrity, progress=progress, cancel=cancel)

    def close(self) -> None:
        self.fetcher.close()


def _shell_release(info: TargetFile, platform: str) -> Release | None:
    """A shell target for `platform` as a Release (its facts come from the signed custom metadata)."""
    custom = info.custom if isinstance(info.custom, dict) else {}
    if custom.get("kind") != "shell" or custom.get("platform") != platform:
        return None
    version = parse_version(custom.get("version"))
    sha = info.hashes.get("sha256")
    if version is None or not isinstance(sha, str):
        return None
    try:
        rollout = float(custom.get("rollout", 100))
    except (TypeError, ValueError):
        rollout = 100.0
    unpacked = custom.get("unpacked_size")
    return Release(
        version=version, url=info.path, integrity=Integrity.from_hex("sha256", sha), size=info.length,
        channel=str(custom.get("channel", "stable")), notes=str(custom.get("notes", "")),
        rollout=rollout if 0 <= rollout <= 100 else 100.0, published=str(custom.get("published", "")),
        unpacked_size=unpacked if isinstance(unpacked, int) and not isinstance(unpacked, bool) else None,
        extra={"kind": "shell", "platform": platform, **_delta_facts(custom)})


def _delta_facts(custom: dict[str, Any]) -> dict[str, object]:
    """What a release says about its file manifest and the deltas that rebuild it."""
    facts: dict[str, object] = {}
    files = custom.get("files_sha256")
    if isinstance(files, str) and len(files) == 64:
        facts["files_sha256"] = files
    deltas = custom.get("deltas")
    if isinstance(deltas, dict):
        facts["deltas"] = {str(k): v for k, v in deltas.items() if isinstance(v, str)}
    return facts


def _matches(info: TargetFile, data: bytes) -> bool:
    try:
        info.verify_length_and_hashes(data)
    except tuf_errors.LengthOrHashMismatchError:
        return False
    return True


def _read_small(path: Path, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def _read_root(path: Path) -> bytes:
    try:
        data = path.read_bytes()[: MAX_ROOT_BYTES + 1]
    except OSError as exc:
        raise TrustError(f"cannot read the trusted root {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_ROOT_BYTES:
        raise TrustError(f"the trusted root {path} is too large")
    _parse_root(data, f"the trusted root {path}")
    return data


def _parse_root(data: bytes, what: str) -> Metadata[Root]:
    try:
        md = Metadata[Root].from_bytes(data)
    except Exception as exc:  # tuf raises several unrelated types for a broken file
        raise TrustError(f"{what} is unreadable: {_describe(exc)}") from None
    if not isinstance(md.signed, Root):
        raise TrustError(f"{what} is not root metadata")
    return md


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
