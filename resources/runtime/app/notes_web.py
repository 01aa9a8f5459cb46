"""The Notes web UI and JSON API, served by http.server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from notes_auth import LOGIN_PATH, TOKEN_HEADER, LaunchToken, cookie_name, cookie_values, set_cookie_header
from notes_native import TextStats
from notes_page import AppInfo, render_error, render_home, render_locked
from notes_store import Note, NoteError, NoteStore, is_valid_id

MAX_BODY_BYTES = 1 << 20
_ID = r"([0-9a-f]{1,32})"
ROUTES: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "GET": [
        (re.compile(r"/"), "page_home"),
        (re.compile(r"/healthz"), "api_health"),
        (re.compile(r"/api/info"), "api_info"),
        (re.compile(r"/api/notes"), "api_list"),
        (re.compile(rf"/api/notes/{_ID}"), "api_get"),
    ],
    "POST": [
        (re.compile(r"/notes"), "form_add"),
        (re.compile(rf"/notes/{_ID}/delete"), "form_delete"),
        (re.compile(r"/api/notes"), "api_add"),
    ],
    "DELETE": [
        (re.compile(rf"/api/notes/{_ID}"), "api_delete"),
    ],
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # "same-origin", not "no-referrer": with no-referrer Chromium sends `Origin: null` on the page's
    # own form posts, and a server that checks Origin cannot tell them from a sandboxed attacker.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Locked(Exception):
    """A page request without the token: answered with a page that says how to get in."""


class NotesServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the app's state for its handlers."""

    daemon_threads = True

    def __init__(self, info: AppInfo, store: NoteStore, stats: TextStats, token: LaunchToken) -> None:
        super().__init__(("127.0.0.1", 0), NotesHandler)
        self.info = info
        self.store = store
        self.stats = stats
        self.token = token
        port = self.server_address[1]
        self.url = f"http://127.0.0.1:{port}/"
        self.login_url = f"http://127.0.0.1:{port}{LOGIN_PATH}?token={token.value}"
        self.cookie_name = cookie_name(port)
        self.allowed_hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.allowed_origins = {f"http://{host}" for host in self.allowed_hosts}


def note_json(note: Note, stats: TextStats) -> dict[str, object]:
    return {
        "id": note.id,
        "text": note.text,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(note.created)),
        "words": stats.count_words(note.text),
        "lines": stats.count_lines(note.text),
        "chars": stats.count_chars(note.text),
    }


class NotesHandler(BaseHTTPRequestHandler):
    server: NotesServer
    server_version = "notes-runtime"

    # --- plumbing -------------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Successful requests are not logged: stderr is for diagnostics the shell keeps."""

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: object) -> None:
        self._send(status, (json.dumps(obj) + "\n").encode("utf-8"), "application/json")

    def _html(self, status: HTTPStatus, page: str) -> None:
        self._send(status, page.encode("utf-8"), "text/html; charset=utf-8")

    def _redirect_home(self) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain; charset=utf-8", {"Location": "/"})

    def _error(self, exc: HttpError, path: str) -> None:
        if path.startswith("/api/") or path == "/healthz":
            self._json(exc.status, {"error": exc.message})
        else:
            self._html(exc.status, render_error(exc.status, exc.message))

    def _check_host(self) -> None:
        # Refuse other host names (DNS rebinding): only our own loopback address is served.
        host = self.headers.get("Host")
        if host is not None and host.lower() not in self.server.allowed_hosts:
            raise HttpError(HTTPStatus.FORBIDDEN, "unexpected Host header")

    def _check_token(self, path: str) -> None:
        # Every request proves this launch's secret: the loopback port is open to every local
        # user and program, the notes are not.
        token = self.server.token
        if token.matches(self.headers.get(TOKEN_HEADER)):
            return
        if any(token.matches(value) for value in cookie_values(self.headers.get("Cookie"),
                                                                self.server.cookie_name)):
            return
        if path.startswith("/api/") or path == "/healthz":
            raise HttpError(HTTPStatus.FORBIDDEN, "this runtime needs its launch token")
        raise Locked

    def _check_same_origin(self) -> None:
        # A page on another site, or on another port of this host (same *site*, so it gets
        # SameSite cookies), must not be able to change notes through the user's browser.
        # Browsers vouch for the initiator with Sec-Fetch-Site; `Origin: null` (a sandboxed frame,
        # a no-referrer page) is trusted only together with that vouch. Non-browser clients send
        # neither header and are judged by the token alone.
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() != "same-origin":
            raise HttpError(HTTPStatus.FORBIDDEN, "cross-site request refused")
        origin = self.headers.get("Origin")
        if origin is None:
            return
        if origin.strip().lower() == "null":
            if site is None:
                raise HttpError(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        elif origin.strip().lower() not in self.server.allowed_origins:
            raise HttpError(HTTPStatus.FORBIDDEN, "cross-origin request refused")

    def _body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        try:
            length = int(length_header)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        method = "GET" if self.command == "HEAD" else self.command
        try:
            self._check_host()
            if method == "GET" and path == LOGIN_PATH:
                self._login()
                return
            self._check_token(path)
            if method != "GET":
                self._check_same_origin()
            for pattern, name in ROUTES.get(method, ()):
                match = pattern.fullmatch(path)
                if match:
                    getattr(self, name)(*match.groups())
                    return
            if any(pattern.fullmatch(path) for routes in ROUTES.values() for pattern, _ in routes):
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed here")
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except HttpError as exc:
            self._error(exc, path)
        except Locked:
            self._html(HTTPStatus.FORBIDDEN, render_locked(self.server.info))
        except NoteError as exc:
            self._error(HttpError(HTTPStatus.BAD_REQUEST, str(exc)), path)
        except ConnectionError:
            raise
        except OSError as exc:
            self.log_error("storage error: %s", exc)
            self._error(HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"storage error: {exc}"), path)

    do_GET = do_HEAD = do_POST = do_DELETE = _dispatch

    def _login(self) -> None:
        """Trade the token in the query for a cookie, so that a plain browser can use the page."""
        query = parse_qs(urlsplit(self.path).query)
        given = query.get("token", [])
        if len(given) != 1 or not self.server.token.matches(given[0]):
            raise HttpError(HTTPStatus.FORBIDDEN, "wrong or missing token")
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain; charset=utf-8", {
            "Location": "/",
            "Set-Cookie": set_cookie_header(self.server.cookie_name, self.server.token),
            # The token is in this URL: never hand it on, not even to our own pages.
            "Referrer-Policy": "no-referrer",
        })

    # --- pages and API --------------------------------------------------------------------

    def page_home(self) -> None:
        self._html(HTTPStatus.OK, render_home(self.server.info, self.server.stats, self.server.store.all()))

    def api_health(self) -> None:
        self._json(HTTPStatus.OK, {"ok": True, "version": self.server.info.version, "pid": os.getpid()})

    def api_info(self) -> None:
        info = self.server.info
        self._json(HTTPStatus.OK, {
            "name": info.name,
            "version": info.version,
            "shell_version": info.shell_version,
            "data_dir": str(info.data_dir),
            "native_version": self.server.stats.version,
            "native_library": str(self.server.stats.path),
            "pid": os.getpid(),
        })

    def api_list(self) -> None:
        stats = self.server.stats
        self._json(HTTPStatus.OK, {"notes": [note_json(n, stats) for n in self.server.store.all()]})

    def api_get(self, note_id: str) -> None:
        note = self.server.store.get(note_id)
        if note is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no note {note_id}")
        self._json(HTTPStatus.OK, note_json(note, self.server.stats))

    def api_add(self) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            obj = json.loads(self._body())
        except (ValueError, UnicodeDecodeError):
            raise HttpError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise HttpError(HTTPStatus.BAD_REQUEST, "expected {\"text\": \"...\"}")
        note = self.server.store.add(text)
        self._send(HTTPStatus.CREATED, (json.dumps(note_json(note, self.server.stats)) + "\n").encode(),
                   "application/json", {"Location": f"/api/notes/{note.id}"})

    def api_delete(self, note_id: str) -> None:
        if not self.server.store.delete(note_id):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no note {note_id}")
        self._json(HTTPStatus.OK, {"deleted": note_id})

    def form_add(self) -> None:
        try:
            form = parse_qs(self._body().decode("utf-8", "replace"), keep_blank_values=True)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed form") from None
        text = form.get("text", [""])[0]
        try:
            self.server.store.add(text)
        except NoteError as exc:
            self._html(HTTPStatus.BAD_REQUEST, render_home(
                self.server.info, self.server.stats, self.server.store.all(), error=str(exc), draft=text))
            return
        self._redirect_home()

    def form_delete(self, note_id: str) -> None:
        self._body()
        if is_valid_id(note_id):
            self.server.store.delete(note_id)  # already gone is fine: the page shows the result
        self._redirect_home()
