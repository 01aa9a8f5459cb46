"""The feed client: a TUF repository read with tuf.ngclient, trust pinned to the app's root key.

Trust bootstrap: the first root (1.root.json) must be signed by the pinned key; from
there ngclient walks root rotations, timestamp, snapshot and targets, and refuses
expired, replayed (rollback), mix-and-match or wrongly signed metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.api.serialization.json import CanonicalJSONSerializer
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from desktop.core.config import AppConfig
from desktop.core.download import Cancel, Fetcher, Integrity, Progress, check_url
from desktop.core.errors import (
    CancelledError,
    DesktopError,
    DigestMismatchError,
    NetworkError,
    TrustError,
    UsageError,
)
from desktop.core.keys import parse_public_key
from desktop.core.registry import Listing, Release
from desktop.core.state import atomic_write_bytes, read_json_object
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

INDEX = "index.json"
MAX_ROOT_BYTES = 512 * 1024
CHANNEL_INCLUDES = {"stable": ("stable",), "beta": ("beta", "stable"), "alpha": ("alpha", "beta", "stable")}


def channels_for(channel: str) -> tuple[str, ...]:
    """A user on a channel also gets the releases of the more stable channels."""
    return CHANNEL_INCLUDES.get(channel, (channel, "stable"))


def rollout_bucket(install_id: str, version: str) -> float:
    """This install's position in [0, 100) for a version's phased rollout (stable across runs)."""
    digest = hashlib.sha256(f"{install_id}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def install_id(config: AppConfig) -> str:
    """A random id created once per data dir, used only for rollout buckets."""
    path = config.data.install_id_file
    try:
        value = path.read_text().strip()
        if len(value) == 32:
            return value
    except OSError:
        pass
    import secrets

    value = secrets.token_hex(16)
    atomic_write_bytes(path, value.encode())
    return value


class _TufFetcher(FetcherInterface):
    """ngclient's fetcher on our httpx client: same URL policy, proxies and timeouts; counts bytes."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.bytes_received = 0
        self.requests = 0
        self.progress: Progress | None = None
        self.cancel: Cancel | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.requests += 1
        with self.fetcher.open(url) as response:
            if response.status_code != 200:
                raise tuf_errors.DownloadHTTPError(f"HTTP {response.status_code} for {url}",
                                                   response.status_code)
            total = response.headers.get("content-length")
            done = 0
            for chunk in self.fetcher.iter_body(response):
                if self.cancel is not None and self.cancel():
                    raise CancelledError("download cancelled")
                done += len(chunk)
                self.bytes_received += len(chunk)
                if self.progress is not None:
                    self.progress(done, int(total) if total and total.isdigit() else None)
                yield chunk


class FeedRegistry:
    """Releases from a TUF feed served at `config.registry_url`."""

    def __init__(self, config: AppConfig, fetcher: Fetcher) -> None:
        if not config.registry_url:
            raise UsageError("no feed URL configured")
        self.base = check_url(config.registry_url.rstrip("/") + "/")
        if not config.public_key:
            raise UsageError("no feed key configured (pass --public-key)")
        self.pinned: SSlibKey = parse_public_key(config.public_key)
        self.config = config
        self.fetcher = fetcher
        self.tuf_fetcher = _TufFetcher(fetcher)
        key = hashlib.sha256(self.base.encode()).hexdigest()[:16]
        self.metadata_dir = config.data.cache_dir / "tuf" / key
        self.targets_dir = self.metadata_dir / "targets"
        self._updater: Updater | None = None
        self._infos: dict[str, TargetFile] = {}

    # -- trust ------------------------------------------------------------------------
    def _bootstrap_root(self) -> bytes:
        url = self.base + "metadata/1.root.json"
        document = self.fetcher.get_document(url, max_bytes=MAX_ROOT_BYTES)
        self.tuf_fetcher.bytes_received += len(document.body)
        try:
            md = Metadata[Root].from_bytes(document.body)
        except Exception as exc:
            raise TrustError(f"the feed's first root metadata is unreadable: {exc}") from None
        signature = md.signatures.get(self.pinned.keyid)
        if signature is None or not isinstance(md.signed, Root):
            raise TrustError("the feed's root metadata is not signed by the pinned key")
        try:
            self.pinned.verify_signature(signature, CanonicalJSONSerializer().serialize(md.signed))
        except Exception:
            raise TrustError("the feed's root metadata has a bad signature from the pinned key") from None
        return document.body

    def _open(self) -> Updater:
        marker = self.metadata_dir / "pinned-key.json"
        pinned = read_json_object(marker) or {}
        if pinned.get("keyid") != self.pinned.keyid:
            # A different pinned key means a different trust root: start from scratch.
            shutil.rmtree(self.metadata_dir, ignore_errors=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = None
        if not (self.metadata_dir / "root.json").is_file():
            bootstrap = self._bootstrap_root()
        try:
            updater = Updater(
                str(self.metadata_dir), self.base + "metadata/", str(self.targets_dir), self.base + "targets/",
                fetcher=self.tuf_fetcher, config=UpdaterConfig(max_root_rotations=64),
                bootstrap=bootstrap)
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise TrustError(f"feed metadata refused: {_describe(exc)}") from None
        if bootstrap is not None:
            atomic_write_bytes(marker, json.dumps({"keyid": self.pinned.keyid}).encode())
        return updater

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an ngclient call with its errors mapped to ours."""
        try:
            return func(*args, **kwargs)
        except DesktopError:
            raise
        except tuf_errors.LengthOrHashMismatchError as exc:
            raise DigestMismatchError(f"{what}: length or hash does not match the signed metadata") from exc
        except tuf_errors.DownloadError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, DesktopError):
                raise cause from None
            raise NetworkError(f"{what}: {_describe(exc)}") from None
        except tuf_errors.ExpiredMetadataError as exc:
            raise TrustError(f"feed metadata has expired ({_describe(exc)}); keeping the installed runtime") \
                from None
        except tuf_errors.BadVersionNumberError as exc:
            raise TrustError(f"feed metadata is older than what was already seen (rollback refused): "
                             f"{_describe(exc)}") from None
        except tuf_errors.UnsignedMetadataError as exc:
            raise TrustError(f"feed metadata is not signed by a trusted key: {_describe(exc)}") from None
        except tuf_errors.RepositoryError as exc:
            raise TrustError(f"feed metadata refused: {_describe(exc)}") from None

    # -- Registry interface -------------------------------------------------------------
    def list_releases(self, channel: str) -> Listing:
        self.tuf_fetcher.bytes_received = 0
        self.tuf_fetcher.requests = 0
        updater = self._updater = self._open()
        self._call("checking the feed", updater.refresh)
        fetched_meta = self.tuf_fetcher.requests
        index = self._call("reading the release index", updater.get_targetinfo, INDEX)
        if index is None:
            return Listing((), bytes_received=self.tuf_fetcher.bytes_received)
        path = updater.find_cached_target(index) or self._call(
            "downloading the release index", updater.download_target, index)
        try:
            names = json.loads(Path(path).read_bytes())["releases"]
        except (OSError, ValueError, KeyError, TypeError):
            raise TrustError("the feed's release index is unreadable") from None
        wanted = channels_for(channel)
        bypass_rollout = self.config.manual_check
        iid = install_id(self.config)
        releases: list[Release] = []
        for name in names if isinstance(names, list) else []:
            info = self._call("reading release metadata", updater.get_targetinfo, str(name))
            if info is None:
                continue
            release = self._release(info)
            if release is None or release.channel not in wanted:
                continue
            if not bypass_rollout and release.rollout < 100 \
                    and rollout_bucket(iid, str(release.version)) >= release.rollout:
                log.info("%s is outside this install's rollout (%g%%)", release.version, release.rollout)
                continue
            self._infos[name] = info
            releases.append(release)
        releases.sort(key=lambda r: r.version, reverse=True)
        # timestamp (plus the probe for a newer root) is all an unchanged feed costs
        return Listing(tuple(releases), not_modified=fetched_meta <= 2,
                       bytes_received=self.tuf_fetcher.bytes_received)

    def _release(self, info: TargetFile) -> Release | None:
        custom = info.custom if isinstance(info.custom, dict) else {}
        version = parse_version(custom.get("version"))
        if version is None:
            return None
        sha = info.hashes.get("sha256")
        try:
            rollout = float(custom.get("rollout", 100))
        except (TypeError, ValueError):
            rollout = 100.0
        return Release(
            version=version,
            url=info.path,
            integrity=Integrity("sha256", bytes.fromhex(sha)) if sha else None,
            size=info.length,
            channel=str(custom.get("channel", "stable")),
            requires_shell=custom.get("requires_shell") if isinstance(custom.get("requires_shell"), str) else None,
            notes=str(custom.get("notes", "")),
            rollout=rollout,
            published=str(custom.get("published", "")),
        )

    def download(self, release: Release, dest: Path, *, progress: Progress | None = None,
                 cancel: Cancel | None = None) -> None:
        if self._updater is None or release.url not in self._infos:
            self.list_releases(release.channel)
        assert self._updater is not None
        info = self._infos.get(release.url)
        if info is None:
            raise TrustError(f"{release.url} is no longer in the feed")
        self.tuf_fetcher.progress, self.tuf_fetcher.cancel = progress, cancel
        try:
            self._call(f"downloading {release.url}", self._updater.download_target, info, str(dest))
        finally:
            self.tuf_fetcher.progress = self.tuf_fetcher.cancel = None

    def close(self) -> None:
        self.fetcher.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
