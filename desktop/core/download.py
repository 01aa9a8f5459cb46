"""The one HTTP path: bounded documents, streamed verified downloads, errors mapped once.

Only this module touches httpx; every httpx exception becomes a `desktop.core.errors`
type here, so callers decide retry policy on types (transient vs deterministic).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from desktop import __version__
from desktop.core.errors import (
    CancelledError,
    DigestMismatchError,
    DiskSpaceError,
    DownloadError,
    NetworkError,
    RegistryError,
    UsageError,
)
from desktop.core.limits import NetConfig
from desktop.core.state import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
Cancel = Callable[[], bool]

CHUNK = 256 * 1024
MAX_REDIRECTS = 5
_SRI_ORDER = ("sha512", "sha384", "sha256", "sha1")


@dataclass(frozen=True)
class Integrity:
    """A digest the downloaded bytes must match (SRI `sha512-<base64>` or an npm `shasum`)."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, integrity: object, shasum: object = None) -> Integrity | None:
        """The strongest usable digest from an SRI string, else from a hex sha1 `shasum`."""
        candidates: dict[str, bytes] = {}
        if isinstance(integrity, str):
            for token in integrity.split():
                algo, _, value = token.partition("-")
                algo = algo.lower()
                if algo not in _SRI_ORDER or not value:
                    continue
                try:
                    raw = base64.b64decode(value.split("?")[0], validate=True)
                except (binascii.Error, ValueError):
                    continue
                if len(raw) == hashlib.new(algo).digest_size:
                    candidates[algo] = raw
        if not candidates and isinstance(shasum, str):
            try:
                raw = bytes.fromhex(shasum)
            except ValueError:
                raw = b""
            if len(raw) == 20:
                candidates["sha1"] = raw
        for algo in _SRI_ORDER:
            if algo in candidates:
                return cls(algo, candidates[algo])
        return None

    @property
    def sri(self) -> str:
        return f"{self.algorithm}-{base64.b64encode(self.digest).decode()}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """Refuse anything but https, except plain http to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise UsageError(f"refusing registry URL {url!r}: only https (or http on a loopback host) is allowed")


@dataclass(frozen=True)
class Document:
    """A small response body fetched with a conditional request."""

    status: int
    body: bytes
    etag: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def ensure_free_space(directory: Path, needed: int, reserve: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed + reserve:
        raise DiskSpaceError(
            f"not enough disk space in {directory}: need {_mb(needed + reserve)}, have {_mb(free)}")


def _mb(n: int) -> str:
    return f"{n / 1048576:.1f} MB"


class Fetcher:
    """A shared httpx client with the project's URL policy, caps and error mapping."""

    def __init__(self, config: NetConfig | None = None) -> None:
        self.config = config or NetConfig()
        timeout = httpx.Timeout(self.config.read_timeout, connect=self.config.connect_timeout)
        # trust_env: honour HTTP(S)_PROXY / NO_PROXY like every other tool on the machine.
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=True,
            headers={"User-Agent": f"desktop-shell/{__version__}"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def open(self, url: str, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """GET `url` following redirects that stay within the URL policy; any status; errors mapped."""
        current = check_url(url)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                request = self._client.build_request("GET", current, headers=headers)
                response = self._client.send(request, stream=True)
                if response.is_redirect and "location" in response.headers:
                    response.close()
                    current = check_url(urljoin(current, response.headers["location"]))
                    continue
                try:
                    yield response
                finally:
                    response.close()
                return
            raise NetworkError(f"too many redirects fetching {url}")
        except httpx.TimeoutException as exc:
            raise NetworkError(f"timed out talking to {urlsplit(current).netloc}") from exc
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach {urlsplit(current).netloc}: {_describe(exc)}") from exc

    @contextmanager
    def stream(self, url: str, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """Like `open`, but a status other than 200/206/304 raises the mapped error."""
        with self.open(url, headers) as response:
            _raise_for_status(response, str(response.url))
            yield response

    def iter_body(self, response: httpx.Response) -> Iterator[bytes]:
        """The decoded body in chunks, with transport errors mapped."""
        return _iter_bytes(response, str(response.url), raw=False)

    def get_document(self, url: str, *, accept: str = "application/json", etag: str | None = None,
                     max_bytes: int | None = None) -> Document:
        """A bounded document; `etag` makes it conditional (304 costs one small round trip)."""
        limit = max_bytes or self.config.max_document_bytes
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        with self.stream(url, headers) as response:
            if response.status_code == 304:
                return Document(304, b"", etag)
            declared = _content_length(response)
            if declared is not None and declared > limit:
                raise RegistryError(f"registry document at {url} is larger than {_mb(limit)}")
            body = bytearray()
            for chunk in _iter_bytes(response, url, raw=False):
                body += chunk
                if len(body) > limit:
                    raise RegistryError(f"registry document at {url} is larger than {_mb(limit)}")
            if declared is not None and "content-encoding" not in response.headers and len(body) != declared:
                raise DownloadError(f"registry document at {url} was truncated")
            return Document(response.status_code, bytes(body), response.headers.get("etag"))

    def get_json(self, url: str, **kwargs: object) -> tuple[Document, object]:
        document = self.get_document(url, **kwargs)  # type: ignore[arg-type]
        if document.not_modified:
            return document, None
        try:
            return document, json.loads(document.body)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"registry answer from {url} is not valid JSON") from None

    def download(self, url: str, dest: Path, *, size: int | None = None,
                 integrity: Integrity | None = None, progress: Progress | None = None,
                 cancel: Cancel | None = None) -> None:
        """Stream `url` into `dest`, verifying size and digest; resumes a previous `dest.part`.

        The archive is never held in memory: chunks go to disk and into the hasher. On a
        digest mismatch the partial bytes are deleted (they can never become right).
        """
        part = dest.with_name(dest.name + ".part")
        meta_path = dest.with_name(dest.name + ".part.json")
        limit = size if size is not None else self.config.max_download_bytes
        have = part.stat().st_size if part.exists() else 0
        validator = _read_validator(meta_path) if have else None
        if have and (validator is None or have > limit):
            have = 0
        headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if have and validator:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = validator
        ensure_free_space(dest.parent, (size or 0) - have, self.config.min_free_bytes)
        with self.open(url, headers) as response:
            restart = response.status_code == 416 and have > 0
            if not restart:
                _raise_for_status(response, url)
                done, total, hasher = self._receive(response, url, part, meta_path, have, limit, size,
                                                    integrity, progress, cancel)
        if restart:
            # The partial file already holds everything (killed just before the rename) or more
            # than the server has: start over rather than trust it. Without a part there is no
            # Range header, so this happens at most once.
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return self.download(url, dest, size=size, integrity=integrity, progress=progress, cancel=cancel)
        if total is not None and done != total:
            raise DownloadError(f"download of {url} ended after {done} of {total} bytes")
        if size is not None and done != size:
            raise DownloadError(f"download of {url} is {done} bytes, expected {size}")
        if hasher and integrity and hasher.digest() != integrity.digest:
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise DigestMismatchError(f"{integrity.algorithm} digest of {url} does not match the registry")
        os.replace(part, dest)
        meta_path.unlink(missing_ok=True)

    def _receive(self, response: httpx.Response, url: str, part: Path, meta_path: Path, have: int, limit: int,
                 size: int | None, integrity: Integrity | None, progress: Progress | None,
                 cancel: Cancel | None) -> tuple[int, int | None, hashlib._Hash | None]:
        """Write the body to `part` (appending when the server honoured the Range), hashing it."""
        hasher = integrity.hasher() if integrity else None
        if response.status_code == 206 and have and _range_start(response) == have:
            mode = "ab"
            if hasher:
                _hash_file(part, hasher)
            log.info("resuming download of %s at %d bytes", url, have)
        else:
            mode, have = "wb", 0
        declared = _content_length(response)
        total = have + declared if declared is not None else size
        if total is not None and total > limit:
            raise DownloadError(f"{url} is {total} bytes, more than the expected {limit}")
        new_validator = response.headers.get("etag") or response.headers.get("last-modified")
        if new_validator:
            atomic_write_json(meta_path, {"validator": new_validator, "url": url})
        done = have
        try:
            with open(part, mode) as out:
                for chunk in _iter_bytes(response, url):
                    if cancel is not None and cancel():
                        raise CancelledError("download cancelled")
                    done += len(chunk)
                    if done > limit:
                        raise DownloadError(f"{url} sent more than the expected {limit} bytes")
                    out.write(chunk)
                    if hasher:
                        hasher.update(chunk)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno == 28:
                raise DiskSpaceError(f"disk full while downloading {url}") from exc
            raise
        return done, total, hasher


def _iter_bytes(response: httpx.Response, url: str, raw: bool = True) -> Iterator[bytes]:
    try:
        yield from (response.iter_raw() if raw else response.iter_bytes())
    except httpx.TimeoutException as exc:
        raise NetworkError(f"timed out downloading {url}") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise DownloadError(f"download of {url} was interrupted: {_describe(exc)}") from exc
    except httpx.HTTPError as exc:
        raise NetworkError(f"cannot download {url}: {_describe(exc)}") from exc


def _raise_for_status(response: httpx.Response, url: str) -> None:
    code = response.status_code
    if code in (200, 206, 304):
        return
    if code >= 500 or code in (408, 429):
        raise NetworkError(f"registry error: HTTP {code} for {url}")
    if code in (404, 410):
        raise RegistryError(f"not found: HTTP {code} for {url}")
    raise RegistryError(f"registry refused the request: HTTP {code} for {url}")


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or "content-encoding" in response.headers:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _range_start(response: httpx.Response) -> int | None:
    value = response.headers.get("content-range", "")
    if not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _read_validator(meta_path: Path) -> str | None:
    meta = read_json_object(meta_path) or {}
    value = meta.get("validator")
    return value if isinstance(value, str) else None


def _hash_file(path: Path, hasher: hashlib._Hash) -> None:
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
