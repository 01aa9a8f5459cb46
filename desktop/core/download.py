"""The one HTTP path: bounded in time, bytes and memory; verified; errors mapped once.

Only this module touches httpx; every httpx exception becomes a `desktop.core.errors` type
here. Both registry kinds (npm documents and tarballs, TUF metadata and targets) go through
`Fetcher`:

* every request has a minimum average rate after a grace period, documents an overall
  deadline, and a per-read timeout: a server that drips one byte every few seconds fails;
* identity encoding is asked for; a server that encodes anyway gets at most one layer
  decoded, streaming, with every cap counted on decoded bytes as they arrive (a 3.5 KB
  `gzip, gzip` answer cannot become 4 GB in memory);
* downloads go to `<dest>.part` in the data dir (opened without following symlinks), resume
  with Range + If-Range, are checked for length and digest, fsync'd and renamed;
* an HTML page or an encoded body where an archive was expected gets its own message.
The transport is injectable (httpx.MockTransport in unit tests).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from desktop import __version__
from desktop.core.digests import Integrity
from desktop.core.errors import (
    CancelledError,
    DigestMismatchError,
    DiskSpaceError,
    DownloadError,
    NetworkError,
    RegistryError,
    StateError,
    UnexpectedContentError,
    UsageError,
)
from desktop.core.limits import NetConfig
from desktop.core.state import atomic_write_json, fsync_dir, read_json_object
from desktop.core.text import mb, redact_url

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
Cancel = Callable[[], bool]

OUT_CHUNK = 256 * 1024
MAX_REDIRECTS = 5
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<title")


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
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UsageError(f"refusing registry URL {redact_url(url)!r}: it does not parse") from None
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise UsageError(f"refusing registry URL {redact_url(url)!r}: only https (or http on a loopback host) "
                     "is allowed")


def host_of(url: str) -> str:
    """The host (and port) of `url`, for messages: never the credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


@dataclass(frozen=True)
class Document:
    """A small response body fetched with a conditional request."""

    status: int
    body: bytes
    etag: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 0


def ensure_free_space(directory: Path, needed: int, reserve: int) -> None:
    free = free_bytes(directory)
    if free < needed + reserve:
        raise DiskSpaceError(f"not enough disk space: need {mb(needed + reserve)}, have {mb(free)} "
                             f"(in {directory})")


class _Decoder:
    """At most one Content-Encoding layer, decoded incrementally with bounded output pieces."""

    def __init__(self, header: str | None, url: str) -> None:
        names = [n.strip().lower() for n in (header or "").split(",") if n.strip()]
        names = [n for n in names if n != "identity"]
        self.encoding = names[0] if names else None
        self._z: zlib._Decompress | None = None
        if len(names) > 1:
            raise UnexpectedContentError(f"{host_of(url)} encoded the response {len(names)} times "
                                         f"({header}); refusing it")
        if self.encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(wbits=31)
        elif self.encoding == "deflate":
            self._z = zlib.decompressobj(wbits=47)
        elif self.encoding is not None:
            raise UnexpectedContentError(f"{host_of(url)} sent an unsupported content encoding "
                                         f"{self.encoding!r}")
        self.url = url

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._z is None:
            yield data
            return
        try:
            out = self._z.decompress(data, OUT_CHUNK)
            while True:
                if out:
                    yield out
                if not self._z.unconsumed_tail:
                    break
                out = self._z.decompress(self._z.unconsumed_tail, OUT_CHUNK)
        except zlib.error:
            raise UnexpectedContentError(f"{host_of(self.url)} sent a body that does not decode as "
                                         f"{self.encoding}") from None

    def finish(self) -> None:
        if self._z is not None and not self._z.eof:
            raise DownloadError(f"the {self.encoding} body from {host_of(self.url)} ended early")


class _Clock:
    """Deadline and minimum average rate of one response."""

    def __init__(self, net: NetConfig, url: str, deadline: float | None) -> None:
        self.net = net
        self.url = url
        self.started = time.monotonic()
        self.deadline = deadline
        self.received = 0

    def check(self, got: int) -> None:
        self.received += got
        elapsed = time.monotonic() - self.started
        if self.deadline is not None and elapsed > self.deadline:
            raise NetworkError(f"{host_of(self.url)} took longer than {self.deadline:g} s to answer")
        if elapsed > self.net.rate_grace and self.received / elapsed < self.net.min_rate:
            raise NetworkError(f"{host_of(self.url)} is too slow ({self.received / elapsed:.0f} bytes/s "
                               f"for {elapsed:.0f} s)")


class Fetcher:
    """A shared httpx client with the project's URL policy, bounds and error mapping."""

    def __init__(self, config: NetConfig | None = None, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config or NetConfig()
        self.bytes_received = 0
        self.requests = 0
        self._transport = transport
        self._client = self._new_client()
        self._expired = False

    def _new_client(self) -> httpx.Client:
        timeout = httpx.Timeout(self.config.read_timeout, connect=self.config.connect_timeout)
        # trust_env: honour HTTP(S)_PROXY / NO_PROXY like every other tool on the machine.
        return httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=self._transport is None,
            transport=self._transport,
            headers={"User-Agent": f"desktop-shell/{__version__}", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _expire(self, client: httpx.Client) -> None:
        """The watchdog: a request past its deadline has its connection closed under it."""
        self._expired = True
        with contextlib.suppress(Exception):
            client.close()

    @contextmanager
    def open(self, url: str, headers: dict[str, str] | None = None, *,
             deadline: float | None = None) -> Iterator[httpx.Response]:
        """GET `url` following redirects that stay within the URL policy; any status; errors mapped.

        A watchdog bounds the whole exchange by `deadline` (default: the headers by the document
        deadline): a server that drips its headers a line at a time resets every per-read timeout.
        """
        current = check_url(url)
        if self._client.is_closed:
            self._client = self._new_client()
        client = self._client
        self._expired = False
        watchdog = threading.Timer(deadline or self.config.document_deadline, self._expire, args=(client,))
        watchdog.daemon = True
        watchdog.start()
        try:
            for _ in range(MAX_REDIRECTS + 1):
                request = client.build_request("GET", current, headers=headers)
                self.requests += 1
                response = client.send(request, stream=True)
                if deadline is None:
                    watchdog.cancel()  # the headers are in: from here the body's rate rules
                if response.is_redirect and "location" in response.headers:
                    response.close()
                    current = check_url(urljoin(current, response.headers["location"]))
                    continue
                try:
                    yield response
                finally:
                    response.close()
                return
            raise NetworkError(f"too many redirects fetching from {host_of(url)}")
        except (httpx.HTTPError, RuntimeError) as exc:
            if self._expired:
                raise NetworkError(f"{host_of(current)} took longer than "
                                   f"{deadline or self.config.document_deadline:g} s to answer") from None
            if isinstance(exc, httpx.TimeoutException):
                raise NetworkError(f"timed out talking to {host_of(current)}") from None
            if isinstance(exc, RuntimeError):
                raise
            raise NetworkError(f"cannot reach {host_of(current)}: {_describe(exc)}") from None
        finally:
            watchdog.cancel()

    def body(self, response: httpx.Response, *, limit: int, deadline: float | None,
             cancel: Cancel | None = None, what: str = "") -> Iterator[bytes]:
        """The decoded body in pieces: deadline, rate, cap and cancel enforced as bytes arrive."""
        url = str(response.url)
        decoder = _Decoder(response.headers.get("content-encoding"), url)
        clock = _Clock(self.config, url, deadline)
        decoded = 0
        try:
            for raw in response.iter_raw():
                if cancel is not None and cancel():
                    raise CancelledError("download cancelled")
                self.bytes_received += len(raw)
                clock.check(len(raw))
                for piece in decoder.feed(raw):
                    decoded += len(piece)
                    if decoded > limit:
                        if what:
                            raise RegistryError(f"{what} at {redact_url(url)} is larger than {mb(limit)}")
                        raise DownloadError(f"{host_of(url)} sent more than the expected {limit} bytes")
                    yield piece
        except (httpx.HTTPError, RuntimeError) as exc:
            if self._expired:
                raise NetworkError(f"{host_of(url)} took longer than {self.config.document_deadline:g} s "
                                   "to answer") from None
            self._map_body_error(exc, url)
        decoder.finish()

    @staticmethod
    def _map_body_error(exc: Exception, url: str) -> None:
        if isinstance(exc, httpx.TimeoutException):
            raise NetworkError(f"timed out reading from {host_of(url)}") from None
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            raise DownloadError(f"the download from {host_of(url)} was interrupted: {_describe(exc)}") from None
        if isinstance(exc, httpx.HTTPError):
            raise NetworkError(f"cannot download from {host_of(url)}: {_describe(exc)}") from None
        raise exc

    def get_document(self, url: str, *, accept: str = "application/json", etag: str | None = None,
                     max_bytes: int | None = None) -> Document:
        """A bounded document; `etag` makes it conditional (304 costs one small round trip)."""
        limit = max_bytes or self.config.max_document_bytes
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        with self.open(url, headers, deadline=self.config.document_deadline) as response:
            raise_for_status(response, url)
            if response.status_code == 304:
                return Document(304, b"", etag)
            declared = content_length(response)
            if declared is not None and declared > limit:
                raise RegistryError(f"the registry document at {redact_url(url)} is larger than {mb(limit)}")
            body = bytearray()
            for piece in self.body(response, limit=limit, deadline=self.config.document_deadline,
                                   what="the registry document"):
                body += piece
            if declared is not None and len(body) != declared:
                raise DownloadError(f"the registry document at {redact_url(url)} was truncated")
            return Document(response.status_code, bytes(body), response.headers.get("etag"))

    def get_json(self, url: str, *, accept: str = "application/json", etag: str | None = None,
                 max_bytes: int | None = None) -> tuple[Document, object]:
        document = self.get_document(url, accept=accept, etag=etag, max_bytes=max_bytes)
        if document.not_modified:
            return document, None
        if document.body.lstrip()[:1] == b"<":
            raise UnexpectedContentError(f"{host_of(url)} answered with an HTML page instead of the registry's "
                                         "JSON (a proxy or a login page?)")
        try:
            return document, json.loads(document.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RegistryError(f"the registry answer from {redact_url(url)} is not valid JSON") from None

    def download(self, url: str, dest: Path, *, size: int | None = None, integrity: Integrity | None = None,
                 progress: Progress | None = None, cancel: Cancel | None = None) -> int:
        """Stream `url` into `dest`, verifying size and digest; resumes a previous `dest.part`.

        Returns the bytes received from the network. Bytes that do not match are deleted (they
        can never become right) and reported as DigestMismatchError: a transient failure.
        """
        received_before = self.bytes_received
        for attempt in range(2):
            restart = self._download_once(url, dest, size, integrity, progress, cancel, fresh=attempt > 0)
            if not restart:
                return self.bytes_received - received_before
        raise DownloadError(f"the server at {host_of(url)} keeps refusing to resume the download")

    def _download_once(self, url: str, dest: Path, size: int | None, integrity: Integrity | None,
                       progress: Progress | None, cancel: Cancel | None, *, fresh: bool) -> bool:
        part = dest.with_name(dest.name + ".part")
        meta_path = dest.with_name(dest.name + ".part.json")
        limit = size if size is not None else self.config.max_download_bytes
        have = 0 if fresh else _part_size(part)
        validator = _read_validator(meta_path, url) if have else None
        if have and (validator is None or have > limit):
            have = 0
        headers: dict[str, str] = {}
        if have and validator:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = validator
        with self.open(url, headers) as response:
            if response.status_code == 416 and have:
                # The partial file already holds everything (killed just before the rename) or more
                # than the server has: start over rather than trust it.
                _discard(part, meta_path)
                return True
            raise_for_status(response, url)
            if "text/html" in response.headers.get("content-type", "").lower():
                raise UnexpectedContentError(f"{host_of(url)} answered with an HTML page instead of the release "
                                             "archive (a proxy or a captive portal?)")
            encoded = "content-encoding" in response.headers
            resume = (response.status_code == 206 and have > 0 and not encoded
                      and _range_start(response) == have)
            if response.status_code == 206 and not resume:
                _discard(part, meta_path)
                return True
            if not resume:
                have = 0
            declared = content_length(response)
            total = have + declared if declared is not None else size
            if total is not None and total > limit:
                raise DownloadError(f"{host_of(url)} announced {total} bytes, more than the expected {limit}")
            new_validator = response.headers.get("etag") or response.headers.get("last-modified")
            if new_validator and not encoded:
                with contextlib.suppress(StateError):
                    atomic_write_json(meta_path, {"validator": new_validator, "url": redact_url(url)})
            elif not resume:
                with contextlib.suppress(OSError):
                    meta_path.unlink()
            hasher = integrity.hasher() if integrity else None
            if resume and hasher is not None:
                _hash_file(part, hasher)
                log.info("resuming the download from %s at %d bytes", host_of(url), have)
            done = self._receive(response, url, part, have, limit, total, hasher, progress, cancel, resume)
        if total is not None and done != total:
            raise DownloadError(f"the download from {host_of(url)} ended after {done} of {total} bytes")
        if size is not None and done != size:
            _discard(part, meta_path)
            raise DigestMismatchError(f"the download from {host_of(url)} is {done} bytes, the release is {size}")
        if hasher is not None and integrity is not None and hasher.digest() != integrity.digest:
            _discard(part, meta_path)
            raise DigestMismatchError(f"the {integrity.algorithm} digest of the download from {host_of(url)} does "
                                      "not match the release (a proxy, a CDN or a mirror changed the bytes); "
                                      "will retry")
        try:
            os.replace(part, dest)
        except OSError as exc:
            raise DownloadError(f"cannot keep the download: {exc.strerror or exc}") from None
        fsync_dir(dest.parent)
        with contextlib.suppress(OSError):
            meta_path.unlink()
        return False

    def _receive(self, response: httpx.Response, url: str, part: Path, have: int, limit: int,
                 total: int | None, hasher: object, progress: Progress | None, cancel: Cancel | None,
                 resume: bool) -> int:
        """Write the body to `part` (appending when the server honoured the Range), hashing it."""
        flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | (os.O_APPEND if resume else os.O_TRUNC)
        try:
            fd = os.open(part, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                # Someone replaced the partial file with a link: never write through it.
                part.unlink(missing_ok=True)
                fd = os.open(part, flags | os.O_EXCL, 0o600)
            else:
                raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
        done = have
        first = not resume
        try:
            # Unbuffered: a reader following the file (extraction during the download) sees every byte
            # that progress reported.
            with os.fdopen(fd, "ab" if resume else "wb", buffering=0) as out:
                for piece in self.body(response, limit=limit - have, deadline=None, cancel=cancel):
                    if first:
                        first = False
                        if piece.lstrip()[:9].lower().startswith(_HTML_STARTS):
                            raise UnexpectedContentError(
                                f"{host_of(url)} answered with an HTML page instead of the release archive "
                                "(a proxy or a captive portal?)")
                    view = memoryview(piece)
                    while view:
                        view = view[out.write(view) or 0:]
                    if hasher is not None:
                        hasher.update(piece)  # type: ignore[attr-defined]
                    done += len(piece)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                _discard(part, part.with_name(part.name + ".json"))
                need = (total or done) + self.config.min_free_bytes
                raise DiskSpaceError(f"not enough disk space: need {mb(need)}, have {mb(free_bytes(part.parent))}") \
                    from None
            raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
        except UnexpectedContentError:
            _discard(part, part.with_name(part.name + ".json"))
            raise
        return done


def _part_size(part: Path) -> int:
    """Size of a regular partial download; a symlink (or anything else) is removed, never followed."""
    try:
        st = part.lstat()
    except OSError:
        return 0
    if not os.path.isfile(part) or part.is_symlink():
        with contextlib.suppress(OSError):
            part.unlink()
        return 0
    return st.st_size


def _discard(part: Path, meta: Path) -> None:
    for path in (part, meta):
        with contextlib.suppress(OSError):
            path.unlink()


def raise_for_status(response: httpx.Response, url: str) -> None:
    code = response.status_code
    if code in (200, 206, 304):
        return
    where = redact_url(url)
    if code >= 500 or code in (408, 429):
        raise NetworkError(f"registry error: HTTP {code} for {where}")
    if code in (404, 410):
        raise RegistryError(f"not found: HTTP {code} for {where}")
    raise RegistryError(f"the registry refused the request: HTTP {code} for {where}")


def content_length(response: httpx.Response) -> int | None:
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


def _read_validator(meta_path: Path, url: str) -> str | None:
    meta = read_json_object(meta_path) or {}
    value = meta.get("validator")
    return value if isinstance(value, str) and meta.get("url") == redact_url(url) else None


def _hash_file(path: Path, hasher: object) -> None:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)  # type: ignore[attr-defined]


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return redact_url(text[0]) if text else type(exc).__name__
