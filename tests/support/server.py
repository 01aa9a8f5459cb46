"""A real HTTP server on 127.0.0.1 for integration tests, benchmarks and demos.

`LoopbackServer` binds a random free port, serves static bytes, files (streamed from disk),
whole directories (a static feed) and npm-protocol package documents, and records every
request it answers together with the bytes that went over the wire.  Per-path faults
(error statuses, garbage, truncation, stalls, throttling, corruption, oversize bodies)
can be injected, forever or for the first N requests only.

    with LoopbackServer() as server:
        server.put("/feed/index.json", b"{}", "application/json")
        server.fault("/feed/index.json", "status", code=503, times=1)
        ...
        assert server.requests_to("/feed/")[-1].wire_bytes <= 2048

Stdlib only; quiet (nothing is logged to stderr); `stop()` returns within about a second
even while requests are stalled.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import gzip
import hashlib
import http
import json
import mimetypes
import os
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self
from urllib.parse import unquote, urlsplit

__all__ = ["CHUNK_SIZE", "FAULT_KINDS", "LoopbackServer", "Request"]

CHUNK_SIZE = 64 * 1024
"""Streamed bodies are written in pieces of this size."""

# Fault kind -> accepted parameters and their defaults.
_FAULT_DEFAULTS: dict[str, dict[str, Any]] = {
    "status": {"code": 500, "body": None, "headers": None},
    "garbage": {"size": 256, "content_type": None},
    "truncate": {"at": None},
    "stall": {"seconds": None},
    "slow": {"chunk": 1024, "delay": 0.05},
    "corrupt": {"offset": 0},
    "oversize": {"extra": 1024},
    "encode": {"layers": ("gzip",), "label": None},
}
FAULT_KINDS = frozenset(_FAULT_DEFAULTS)

_STOP_GRACE = 1.0  # seconds stop() waits for connection threads to wind down
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass
class Request:
    """One served request, recorded when its response goes out."""

    method: str
    path: str  # as sent on the request line (query string and %-escapes preserved)
    headers: dict[str, str]  # request headers, keys lower-cased
    status: int
    bytes_sent: int  # response body bytes written
    request_bytes: int  # request line + headers, as received
    response_header_bytes: int  # status line + headers, as sent

    @property
    def wire_bytes(self) -> int:
        """Everything this exchange put on the wire (both directions, bodies included)."""
        return self.request_bytes + self.response_header_bytes + self.bytes_sent


@dataclass
class _Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None  # None = forever


@dataclass
class _Static:
    content_type: str
    data: bytes | None = None
    etag: str = ""
    file: Path | None = None


@dataclass
class _Mount:
    prefix: str
    directory: Path


@dataclass
class _Entity:
    """A representation being served: in-memory bytes or an open file."""

    size: int
    etag: str
    content_type: str
    data: bytes | None = None
    fh: BinaryIO | None = None

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of at most CHUNK_SIZE."""
        if self.data is not None:
            view = memoryview(self.data)
            for pos in range(start, end, CHUNK_SIZE):
                yield bytes(view[pos:min(pos + CHUNK_SIZE, end)])
            return
        assert self.fh is not None
        self.fh.seek(start)
        remaining = end - start
        while remaining > 0:
            piece = self.fh.read(min(CHUNK_SIZE, remaining))
            if not piece:  # the file shrank under us: the client sees a short body
                return
            remaining -= len(piece)
            yield piece

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


class _Aborted(Exception):
    """The server is stopping: drop the connection without (finishing) a response."""


def _key(path: str) -> str:
    """Normalised lookup key of a request path or registered path (no query, %-decoded)."""
    bare = unquote(urlsplit(path).path)
    return bare if bare.startswith("/") else "/" + bare


def _bytes_etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _file_etag(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    bare = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == bare:
            return True
    return False


def _parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """(start, end-exclusive) for one satisfiable range, None to ignore the header, False if unsatisfiable."""
    match = _RANGE_RE.match(header)
    if match is None:  # malformed or several ranges: serve the whole thing
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:  # "bytes=9-3" is invalid: ignore it
        return None
    end = size if not last else int(last) + 1
    if start >= size:
        return False
    return start, min(end, size)


def _limit(chunks: Iterable[bytes], at: int) -> Iterator[bytes]:
    remaining = at
    for piece in chunks:
        if remaining <= 0:
            return
        piece = piece[:remaining]
        remaining -= len(piece)
        yield piece


def _corrupt(chunks: Iterable[bytes], start: int, offset: int) -> Iterator[bytes]:
    pos = start
    for piece in chunks:
        if pos <= offset < pos + len(piece):
            flipped = bytearray(piece)
            flipped[offset - pos] ^= 0xFF
            piece = bytes(flipped)
        pos += len(piece)
        yield piece


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    for piece in chunks:
        for pos in range(0, len(piece), size):
            yield piece[pos:pos + size]


def _random_chunks(total: int) -> Iterator[bytes]:
    for pos in range(0, total, CHUNK_SIZE):
        yield os.urandom(min(CHUNK_SIZE, total - pos))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _CountingReader:
    """Wraps the handler's rfile to count request-line and header bytes as they are read."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readline(self, size: int = -1) -> bytes:
        line = self._raw.readline(size)
        self.count += len(line)
        return line

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        self._raw.close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: LoopbackServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  name=f"loopback-{client_address[1]}", daemon=True)
        self.owner._connection_opened(thread, request)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                self.owner._connection_closed(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # quiet: tests provoke broken connections on purpose


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    rfile: Any
    protocol_version = "HTTP/1.1"
    server_version = "loopback"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are dropped after this many seconds

    _record: Request | None = None
    _recorded = False

    # -- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.rfile = _CountingReader(self.rfile)

    def handle_one_request(self) -> None:
        self.rfile.count = 0
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owner(self) -> LoopbackServer:
        return self.server.owner

    def do_GET(self) -> None:
        self._dispatch(self._respond)

    def do_HEAD(self) -> None:
        self._dispatch(self._respond)

    def _not_allowed(self) -> None:
        self.close_connection = True  # the request body, if any, is never read
        self._send(405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain"),
                         ("Content-Length", "19")], [b"method not allowed\n"])

    def do_POST(self) -> None:
        self._dispatch(self._not_allowed)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _dispatch(self, respond: Callable[[], None]) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        self._record = Request(method=self.command, path=self.path, headers=headers, status=0,
                               bytes_sent=0, request_bytes=self.rfile.count, response_header_bytes=0)
        self._recorded = False
        try:
            respond()
        except (_Aborted, OSError):
            self.close_connection = True
        finally:
            if not self._recorded and self._record.status:
                self.owner._add_request(self._record)  # failed before the last write
            self._record = None

    def _pause(self, seconds: float | None) -> None:
        """Sleep, waking at once (and aborting the response) when the server stops."""
        if self.owner._stopping.wait(seconds):
            raise _Aborted

    def _send(self, status: int, headers: list[tuple[str, str]], body: Iterable[bytes] = (), *,
              delay: float = 0.0, close: bool = False) -> None:
        """Write a response; the request is recorded just before its last byte goes out."""
        assert self._record is not None
        if close:
            self.close_connection = True
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}", f"Server: {self.server_version}",
                 f"Date: {email.utils.formatdate(usegmt=True)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        record = self._record
        record.status = status
        record.response_header_bytes = len(head)

        pieces = iter(()) if self.command == "HEAD" else (p for p in body if p)
        pending = head
        current = next(pieces, None)
        first = True
        while True:
            following = next(pieces, None) if current is not None else None
            if current is not None and not first and delay > 0:
                self._pause(delay)
            size = len(current) if current is not None else 0
            data = pending + current if current is not None else pending
            if following is None:
                record.bytes_sent += size
                self.owner._add_request(record)
                self._recorded = True
                try:
                    self.wfile.write(data)
                except OSError:
                    record.bytes_sent -= size
                    raise
                return
            self.wfile.write(data)
            record.bytes_sent += size
            pending = b""
            current = following
            first = False

    def _send_simple(self, status: int, text: bytes, extra: list[tuple[str, str]] | None = None,
                     content_type: str = "text/plain") -> None:
        no_body = status in (204, 304) or status < 200
        headers = [("Content-Type", content_type)] + list(extra or [])
        if not no_body:
            headers.append(("Content-Length", str(len(text))))
        self._send(status, headers, [] if no_body else [text])

    # -- behaviour ---------------------------------------------------------------------------

    def _respond(self) -> None:
        owner = self.owner
        key = _key(self.path)
        fault = owner._take_fault(key)
        if fault is not None:
            params = fault.params
            if fault.kind == "status":
                code = int(params["code"])
                text = params["body"]
                if text is None:
                    text = f"fault: {code}\n".encode()
                elif isinstance(text, str):
                    text = text.encode()
                extra = list((params["headers"] or {}).items())
                self._send_simple(code, text, extra)
                return
            if fault.kind == "garbage":
                size = int(params["size"])
                junk = bytearray(os.urandom(size))
                if junk:
                    junk[0] = 0xFF  # never valid UTF-8, so never JSON
                ctype = params["content_type"] or "application/json"
                self._send(200, [("Content-Type", ctype), ("Content-Length", str(size))], [bytes(junk)])
                return
            if fault.kind == "stall":
                owner._stall_begin()
                try:
                    self._pause(params["seconds"])
                finally:
                    owner._stall_end()
                fault = None  # then serve normally
        entity = owner._resolve(key)
        if entity is None:
            self._send_simple(404, b"not found\n")
            return
        try:
            self._serve_entity(entity, fault)
        finally:
            entity.close()

    def _serve_entity(self, entity: _Entity, fault: _Fault | None) -> None:
        etag = entity.etag
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            # A 304 may carry the Content-Length a 200 would have had; clients read no body.
            self._send(304, [("ETag", etag), ("Content-Length", str(entity.size))])
            return
        headers = [("Content-Type", entity.content_type), ("ETag", etag), ("Accept-Ranges", "bytes")]
        status, start, end = 200, 0, entity.size
        range_header = self.headers.get("Range")
        if range_header is not None:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range.strip() == etag:
                wanted = _parse_range(range_header, entity.size)
                if wanted is False:
                    self._send(416, [("Content-Range", f"bytes */{entity.size}"), ("Content-Length", "0")])
                    return
                if isinstance(wanted, tuple):
                    status, (start, end) = 206, wanted
                    headers.append(("Content-Range", f"bytes {start}-{end - 1}/{entity.size}"))
        length = end - start
        body: Iterable[bytes] = entity.chunks(start, end)
        delay = 0.0
        close = False
        content_length: int | None = length
        if fault is not None:
            params = fault.params
            if fault.kind == "truncate":
                at = params["at"]
                body = _limit(body, length // 2 if at is None else max(0, min(int(at), length)))
                close = True
            elif fault.kind == "corrupt":
                body = _corrupt(body, start, int(params["offset"]))
            elif fault.kind == "slow":
                body = _rechunk(body, max(1, int(params["chunk"])))
                delay = float(params["delay"])
            elif fault.kind == "oversize":
                body = (piece for part in (body, _random_chunks(int(params["extra"]))) for piece in part)
                content_length = None
                close = True
            elif fault.kind == "encode":
                # A re-encoding CDN: the body gzipped once per layer, labelled (or mislabelled) as such.
                data = b"".join(entity.chunks(0, entity.size))
                for _ in params["layers"]:
                    data = gzip.compress(data, mtime=0)
                label = params["label"] if params["label"] is not None else ", ".join(params["layers"])
                headers = [h for h in headers if h[0] not in ("Accept-Ranges", "Content-Range")] + [
                    ("Content-Encoding", label)]
                status, body, content_length = 200, [data], len(data)
        if content_length is not None:
            headers.append(("Content-Length", str(content_length)))
        self._send(status, headers, body, delay=delay, close=close)


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 with a request tracker and fault injection."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._stall_cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._statics: dict[str, _Static] = {}
        self._mounts: list[_Mount] = []
        self._npm: dict[str, dict[str, Any] | bytes] = {}
        self._faults: dict[str, _Fault] = {}
        self._requests: list[Request] = []
        self._connections: dict[threading.Thread, Any] = {}
        self._stalled = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a random free port on 127.0.0.1 and serve in a background thread."""
        if self._httpd is not None or self._stopped:
            raise RuntimeError("a LoopbackServer can be started once")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, abort stalled/throttled responses and close every connection (about 1 s at most)."""
        httpd = self._httpd
        if httpd is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + _STOP_GRACE
        for thread, _ in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """Base URL, "http://127.0.0.1:PORT" (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    # -- request tracker -----------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """A snapshot of the requests served so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def requests_to(self, path_prefix: str) -> list[Request]:
        """Requests whose path (as sent, or %-decoded) starts with `path_prefix`."""
        return [r for r in self.requests
                if r.path.startswith(path_prefix) or unquote(r.path).startswith(path_prefix)]

    @property
    def stalled(self) -> int:
        """How many requests are currently held by a "stall" fault."""
        with self._lock:
            return self._stalled

    def wait_for_stalled(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least `count` requests are stalled; False on timeout."""
        with self._stall_cond:
            return self._stall_cond.wait_for(lambda: self._stalled >= count, timeout)

    # -- content -------------------------------------------------------------------------------

    def put(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Serve `body` at `path` (ETag from its SHA-256)."""
        data = bytes(body)
        with self._lock:
            self._statics[_key(path)] = _Static(content_type=content_type, data=data, etag=_bytes_etag(data))

    def put_file(self, path: str, file: Path, content_type: str = "application/octet-stream") -> None:
        """Serve `file` at `path`, opened and streamed from disk per request (ETag from size and mtime)."""
        with self._lock:
            self._statics[_key(path)] = _Static(content_type=content_type, file=Path(file))

    def serve_directory(self, prefix: str, directory: Path) -> None:
        """Serve every file under `directory` at `prefix` + its relative path, looked up per request."""
        normalised = _key(prefix)
        if not normalised.endswith("/"):
            normalised += "/"
        with self._lock:
            self._mounts = [m for m in self._mounts if m.prefix != normalised]
            self._mounts.append(_Mount(normalised, Path(directory).resolve()))
            self._mounts.sort(key=lambda m: len(m.prefix), reverse=True)

    def remove(self, path: str) -> None:
        """Stop serving `path` (static content, an npm document route or a directory prefix)."""
        key = _key(path)
        with self._lock:
            self._statics.pop(key, None)
            self._npm.pop(key[1:], None)
            prefix = key if key.endswith("/") else key + "/"
            self._mounts = [m for m in self._mounts if m.prefix != prefix]

    # -- faults --------------------------------------------------------------------------------

    def fault(self, path: str, kind: str, *, times: int | None = None, **params: Any) -> None:
        """Inject a fault on `path` for the first `times` requests (None: until cleared).

        Kinds and parameters (defaults):
          status(code=500, body=None, headers=None)  that status with a short body
          garbage(size=256, content_type=None)        200 with random non-JSON bytes
          truncate(at=None -> half)                   full Content-Length, `at` body bytes, then close
          stall(seconds=None -> until stop)           hold the request, then serve normally
          slow(chunk=1024, delay=0.05)                body in `chunk`-byte pieces, `delay` s apart
          corrupt(offset=0)                           the byte at representation offset `offset` flipped
          oversize(extra=1024)                        no Content-Length, body + `extra` bytes, then close
        """
        if kind not in _FAULT_DEFAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULT_DEFAULTS)}")
        unknown = set(params) - set(_FAULT_DEFAULTS[kind])
        if unknown:
            raise TypeError(f"fault {kind!r} takes no parameter(s) {sorted(unknown)}")
        if times is not None and times < 1:
            raise ValueError("times must be None or >= 1")
        merged = {**_FAULT_DEFAULTS[kind], **params}
        with self._lock:
            self._faults[_key(path)] = _Fault(kind, merged, times)

    def clear_faults(self, path: str | None = None) -> None:
        with self._lock:
            if path is None:
                self._faults.clear()
            else:
                self._faults.pop(_key(path), None)

    # -- npm protocol ---------------------------------------------------------------------------

    def publish_npm_package(self, name: str, version: str, tarball: Path, *, tag: str | None = "latest",
                            tags: dict[str, str] | None = None,
                            extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add `version` of `name` to its package document and serve the tarball; returns the version object.

        The document is served at /<name> (scoped: /@scope%2fname, also /@scope/name); the tarball
        at /<name>/-/<basename>-<version>.tgz.  `extra` is merged into the version object (a "dist"
        dict is merged into its dist).  `tag` (unless None) and every entry of `tags` set dist-tags.
        """
        tarball = Path(tarball)
        sha512 = hashlib.sha512()
        sha1 = hashlib.sha1()
        with tarball.open("rb") as fh:
            while piece := fh.read(CHUNK_SIZE):
                sha512.update(piece)
                sha1.update(piece)
        basename = name.rsplit("/", 1)[-1]
        tarball_path = f"/{name}/-/{basename}-{version}.tgz"
        version_doc: dict[str, Any] = {
            "name": name,
            "version": version,
            "dist": {
                "tarball": self.url + tarball_path,
                "integrity": "sha512-" + base64.b64encode(sha512.digest()).decode("ascii"),
                "shasum": sha1.hexdigest(),
            },
        }
        for key, value in (extra or {}).items():
            if key == "dist" and isinstance(value, dict):
                version_doc["dist"].update(copy.deepcopy(value))
            else:
                version_doc[key] = copy.deepcopy(value)
        now = _now_iso()
        with self._lock:
            stored = self._npm.get(name)
            doc: dict[str, Any] = stored if isinstance(stored, dict) else {
                "name": name, "dist-tags": {}, "versions": {}, "time": {"created": now}}
            doc.setdefault("dist-tags", {})
            doc.setdefault("versions", {})
            doc.setdefault("time", {})
            doc["versions"][version] = version_doc
            doc["time"][version] = now
            doc["time"]["modified"] = now
            if tag is not None:
                doc["dist-tags"][tag] = version
            doc["dist-tags"].update(tags or {})
            self._npm[name] = doc
            self.put_file(tarball_path, tarball)
        return copy.deepcopy(version_doc)

    def set_dist_tag(self, name: str, tag: str, version: str) -> None:
        """Point dist-tag `tag` of a published package at `version` (not validated)."""
        with self._lock:
            doc = self._npm.get(name)
            if not isinstance(doc, dict):
                raise KeyError(f"no JSON package document for {name!r}")
            doc.setdefault("dist-tags", {})[tag] = version
            doc.setdefault("time", {})["modified"] = _now_iso()

    def npm_document(self, name: str) -> dict[str, Any]:
        """A copy of the package document served for `name`."""
        with self._lock:
            doc = self._npm[name]
            if isinstance(doc, bytes):
                return dict(json.loads(doc))  # ValueError for a deliberately broken document
            return copy.deepcopy(doc)

    def set_npm_document(self, name: str, doc: dict[str, Any] | bytes | str) -> None:
        """Replace the document served for `name`: a dict (JSON-encoded per request) or raw bytes."""
        with self._lock:
            self._npm[name] = doc.encode() if isinstance(doc, str) else (
                bytes(doc) if isinstance(doc, bytes | bytearray) else copy.deepcopy(doc))

    # -- internals (called from handler threads) ------------------------------------------------

    def _connection_opened(self, thread: threading.Thread, sock: Any) -> None:
        with self._lock:
            self._connections[thread] = sock

    def _connection_closed(self, thread: threading.Thread) -> None:
        with self._lock:
            self._connections.pop(thread, None)

    def _add_request(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _stall_begin(self) -> None:
        with self._stall_cond:
            self._stalled += 1
            self._stall_cond.notify_all()

    def _stall_end(self) -> None:
        with self._stall_cond:
            self._stalled -= 1
            self._stall_cond.notify_all()

    def _take_fault(self, key: str) -> _Fault | None:
        with self._lock:
            fault = self._faults.get(key)
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[key]
            return _Fault(fault.kind, dict(fault.params), fault.remaining)

    def _resolve(self, key: str) -> _Entity | None:
        with self._lock:
            static = self._statics.get(key)
            npm_doc = self._npm.get(key[1:]) if static is None else None
            mounts = list(self._mounts)
        if static is not None:
            if static.data is not None:
                return _Entity(len(static.data), static.etag, static.content_type, data=static.data)
            assert static.file is not None
            return self._open_file(static.file, static.content_type)
        if npm_doc is not None:
            data = npm_doc if isinstance(npm_doc, bytes) else json.dumps(npm_doc).encode()
            return _Entity(len(data), _bytes_etag(data), "application/json", data=data)
        for mount in mounts:
            if not key.startswith(mount.prefix):
                continue
            relative = key[len(mount.prefix):]
            if not relative or ".." in relative.split("/"):
                return None
            candidate = (mount.directory / relative).resolve()
            if not candidate.is_relative_to(mount.directory) or not candidate.is_file():
                return None
            guessed, encoding = mimetypes.guess_type(candidate.name)
            content_type = guessed if guessed and encoding is None else "application/octet-stream"
            return self._open_file(candidate, content_type)
        return None

    @staticmethod
    def _open_file(path: Path, content_type: str) -> _Entity | None:
        try:
            fh = path.open("rb")
        except OSError:
            return None
        try:
            st = os.fstat(fh.fileno())
        except OSError:
            fh.close()
            return None
        return _Entity(st.st_size, _file_etag(st), content_type, fh=fh)
