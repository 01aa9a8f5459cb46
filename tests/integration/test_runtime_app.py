"""The bundled runtime (resources/runtime), run as real subprocesses, and derive_runtime."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from packaging.version import Version

from desktop.core.errors import NativeDepError
from desktop.core.manifest import RuntimeManifest, verify_version_dir
from desktop.core.paths import resources_dir
from desktop.devtools import derive_runtime

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process model")

NATIVE_DIR = resources_dir() / "native"
READY_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0
RUNTIME_ENV_KEYS = ("DESKTOP_RUNTIME_DATA", "DESKTOP_SHELL_VERSION", "DESKTOP_RUNTIME_PARENT_PID",
                    "DESKTOP_RUNTIME_TOKEN")
# The launch token every runtime below is started with (the shell makes a new one per start).
TOKEN = secrets.token_urlsafe(32)
AUTH = {"X-Desktop-Token": TOKEN}


# --- helpers ------------------------------------------------------------------------------------


class Runtime:
    """A spawned process whose stdout lines and stderr are collected by reader threads."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        )
        self.stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._stderr_changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.put(line)
        self.stdout_lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._stderr_changed:
                self._stderr.append(line)
                self._stderr_changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._stderr_changed:
            return "".join(self._stderr)

    def next_line(self, timeout: float = READY_TIMEOUT) -> str | None:
        """The next stdout line, or None at end of file."""
        try:
            return self.stdout_lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stdout line within {timeout}s; stderr:\n{self.stderr}") from None

    def ready(self, timeout: float = READY_TIMEOUT) -> dict[str, object]:
        line = self.next_line(timeout)
        assert line is not None, f"exited ({self.proc.wait(EXIT_TIMEOUT)}) before ready:\n{self.stderr}"
        obj = json.loads(line)
        assert isinstance(obj, dict) and obj.get("ready") is True, line
        return obj

    def wait_stderr(self, text: str, timeout: float = READY_TIMEOUT) -> None:
        with self._stderr_changed:
            found = self._stderr_changed.wait_for(lambda: text in "".join(self._stderr), timeout)
        assert found, f"{text!r} not on stderr within {timeout}s:\n{self.stderr}"

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code

    def remaining_stdout(self) -> list[str]:
        """Every stdout line not read yet; call after the process has exited."""
        lines = []
        while (line := self.next_line(EXIT_TIMEOUT)) is not None:
            lines.append(line)
        return lines

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(EXIT_TIMEOUT)
        for thread in self._threads:
            thread.join(EXIT_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, *, auth: bool = True) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange without following redirects: status, lower-cased headers, body.

    With `auth` (the default) the request proves TOKEN, as the shell's web view does."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request(method, target, body=body, headers={**(AUTH if auth else {}), **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(url: str) -> object:
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=10) as response:
        assert response.headers.get_content_type() == "application/json"
        return json.loads(response.read())


def post_note(base: str, text: str) -> dict[str, object]:
    status, _, body = request(base + "api/notes", "POST", json.dumps({"text": text}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 201, body
    note = json.loads(body)
    assert isinstance(note, dict)
    return note


class TagBalance(HTMLParser):
    """Checks that every non-void element is closed in order and ids are unique."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                      "source", "track", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids += [value for key, value in attrs if key == "id" and value]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            self.errors.append(f"end tag for void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def assert_tidy_html(page: str) -> None:
    checker = TagBalance()
    checker.feed(page)
    checker.close()
    assert checker.doctype.lower() == "doctype html"
    assert not checker.errors, checker.errors
    assert not checker.stack, f"unclosed: {checker.stack}"
    assert len(checker.ids) == len(set(checker.ids)), checker.ids
    assert "<script" not in page and "http://" not in page.replace("http://127.0.0.1", "")


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# --- fixtures -----------------------------------------------------------------------------------


MakeVersion = Callable[..., Path]
Spawn = Callable[..., Runtime]


@pytest.fixture
def make_version(tmp_path: Path) -> MakeVersion:
    """A runtime version directory as the stager leaves it: derived, with native deps copied in."""

    def make(version: str = "1.2.3", *, simulate: str | None = None, native: bool = True) -> Path:
        dest = derive_runtime(tmp_path / "versions" / version, version, simulate=simulate)
        if native:
            for name in RuntimeManifest.load(dest).native:
                shutil.copytree(NATIVE_DIR / name, dest / name)
        return dest

    return make


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "runtime-data"


@pytest.fixture
def spawn(tmp_path: Path, data_dir: Path) -> Iterator[Spawn]:
    """Start runtimes the way the shell does; every one is killed and reaped at teardown."""
    started: list[Runtime] = []

    def start(version_dir: Path, *, env: dict[str, str | None] | None = None,
              argv: list[str] | None = None) -> Runtime:
        manifest = RuntimeManifest.load(version_dir)
        full_env = {k: v for k, v in os.environ.items() if k not in RUNTIME_ENV_KEYS}
        full_env.update({
            "DESKTOP_RUNTIME_DATA": str(data_dir),
            "DESKTOP_SHELL_VERSION": "9.8.7",
            "DESKTOP_RUNTIME_PARENT_PID": str(os.getpid()),
            "DESKTOP_RUNTIME_TOKEN": TOKEN,
        })
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        if argv is None:
            argv = [sys.executable, str(version_dir / manifest.entry)]
        runtime = Runtime(argv, full_env, cwd=tmp_path)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.close()


# --- the happy path -----------------------------------------------------------------------------


def test_ready_line_health_and_page(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version("1.2.3"))
    ready = runtime.ready()
    assert set(ready) == {"ready", "url", "version", "pid"}
    assert ready["version"] == "1.2.3"
    assert ready["pid"] == runtime.pid
    assert isinstance(ready["url"], str) and re.fullmatch(r"http://127\.0\.0\.1:\d+/", ready["url"])
    base = ready["url"]

    assert get_json(base + "healthz") == {"ok": True, "version": "1.2.3", "pid": runtime.pid}
    with urllib.request.urlopen(urllib.request.Request(base, headers=AUTH), timeout=10) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = response.read().decode("utf-8")
    assert_tidy_html(page)
    assert "runtime <b>1.2.3</b>" in page
    assert "shell <b>9.8.7</b>" in page
    assert "textstats <b>1.0.0</b>" in page
    assert "No notes yet" in page

    runtime.signal(signal.SIGTERM)
    assert runtime.wait() == 0
    assert runtime.remaining_stdout() == [], "stdout carries only the ready line"


def test_api_info(make_version: MakeVersion, spawn: Spawn, data_dir: Path) -> None:
    version_dir = make_version("2.0.0")
    runtime = spawn(version_dir)
    info = get_json(str(runtime.ready()["url"]) + "api/info")
    assert isinstance(info, dict)
    assert info["name"] == "notes-runtime"
    assert info["version"] == "2.0.0"
    assert info["shell_version"] == "9.8.7"
    assert info["data_dir"] == str(data_dir.resolve())
    assert info["native_version"] == "1.0.0"
    assert Path(str(info["native_library"])).parent == version_dir / "textstats"


def test_shell_version_unknown_when_unset(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version(), env={"DESKTOP_SHELL_VERSION": None})
    info = get_json(str(runtime.ready()["url"]) + "api/info")
    assert isinstance(info, dict) and info["shell_version"] == "unknown"


def test_note_is_persisted_counted_and_kept_across_restart(
        make_version: MakeVersion, spawn: Spawn, data_dir: Path) -> None:
    version_dir = make_version()
    runtime = spawn(version_dir)
    base = str(runtime.ready()["url"])
    note = post_note(base, "hello brave\nnew  world")
    assert (note["words"], note["lines"]) == (4, 2)
    unicode_note = post_note(base, "héllo wörld 日本語")
    assert (unicode_note["words"], unicode_note["chars"]) == (3, 15)

    stored = json.loads((data_dir / "notes.json").read_text(encoding="utf-8"))
    assert [n["text"] for n in stored["notes"]] == ["hello brave\nnew  world", "héllo wörld 日本語"]
    assert not [p.name for p in data_dir.iterdir() if p.name != "notes.json"], "no temp files left"

    with urllib.request.urlopen(urllib.request.Request(base, headers=AUTH), timeout=10) as response:
        page = response.read().decode("utf-8")
    assert_tidy_html(page)
    assert "hello brave\nnew  world" in page
    assert f'id="note-{note["id"]}"' in page
    assert '<span class="words">4 words</span>' in page
    assert "2 notes · 7 words" in page

    runtime.signal(signal.SIGTERM)
    assert runtime.wait() == 0

    restarted = spawn(version_dir)
    listed = get_json(str(restarted.ready()["url"]) + "api/notes")
    assert isinstance(listed, dict)
    assert [(n["id"], n["text"], n["words"]) for n in listed["notes"]] == [
        (note["id"], "hello brave\nnew  world", 4), (unicode_note["id"], "héllo wörld 日本語", 3)]


def test_form_add_and_delete_redirect_home(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"])
    origin = base.rstrip("/")
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin}

    status, headers, _ = request(base + "notes", "POST", urlencode({"text": "from the form\r\nok"}).encode(),
                                 form)
    assert (status, headers["location"]) == (303, "/")
    listed = get_json(base + "api/notes")
    assert isinstance(listed, dict)
    [note] = listed["notes"]
    assert (note["text"], note["words"]) == ("from the form\nok", 4)

    status, _, body = request(base + "notes", "POST", urlencode({"text": "   "}).encode(), form)
    assert status == 400 and b"a note needs some text" in body
    assert_tidy_html(body.decode("utf-8"))

    status, headers, _ = request(base + f"notes/{note['id']}/delete", "POST", b"", form)
    assert (status, headers["location"]) == (303, "/")
    assert get_json(base + "api/notes") == {"notes": []}


def test_api_errors_and_delete(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"])
    json_headers = {"Content-Type": "application/json"}

    assert request(base + "api/notes", "POST", b'{"text": ""}', json_headers)[0] == 400
    assert request(base + "api/notes", "POST", b"not json", json_headers)[0] == 400
    assert request(base + "api/notes", "POST", b'{"text": "x"}', {"Content-Type": "text/plain"})[0] == 415
    assert request(base + "api/notes/abc123", "GET")[0] == 404
    assert request(base + "api/notes/abc123", "DELETE")[0] == 404
    assert request(base + "nowhere", "GET")[0] == 404
    assert request(base + "healthz", "DELETE")[0] == 405

    note = post_note(base, "short lived")
    status, _, body = request(base + f"api/notes/{note['id']}", "GET")
    assert status == 200 and json.loads(body)["text"] == "short lived"
    status, _, body = request(base + f"api/notes/{note['id']}", "DELETE")
    assert status == 200 and json.loads(body) == {"deleted": note["id"]}
    assert get_json(base + "api/notes") == {"notes": []}


def test_cross_origin_and_foreign_host_are_refused(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"])
    form = urlencode({"text": "sneaky"}).encode()
    assert request(base + "notes", "POST", form, {"Origin": "http://evil.example"})[0] == 403
    assert request(base + "notes", "POST", form, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert request(base, "GET", headers={"Host": "rebind.example:80"})[0] == 403
    assert get_json(base + "api/notes") == {"notes": []}


def test_csrf_rules_for_changes(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"])
    port = urlsplit(base).port
    form = urlencode({"text": "sneaky"}).encode()
    plain = {"Content-Type": "application/x-www-form-urlencoded"}
    refused = [
        # another server on this host is the same *site*: it would get a SameSite cookie
        {"Origin": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "none"},
        # an opaque origin (sandboxed frame, no-referrer page elsewhere) without the browser's vouch
        {"Origin": "null"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Origin": base.rstrip("/"), "Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        status, _, body = request(base + "notes", "POST", form, {**plain, **headers})
        assert status == 403, (headers, body)
    assert get_json(base + "api/notes") == {"notes": []}

    # What Chromium sends for the page's own form under a no-referrer policy (QtWebEngine 6.12).
    status, _, _ = request(base + "notes", "POST", urlencode({"text": "mine"}).encode(),
                           {**plain, "Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert status == 303
    listed = get_json(base + "api/notes")
    assert isinstance(listed, dict) and [n["text"] for n in listed["notes"]] == ["mine"]


def test_page_asks_for_a_same_origin_referrer_policy(make_version: MakeVersion, spawn: Spawn) -> None:
    # With "no-referrer" the browser sends `Origin: null` on the page's own form posts.
    runtime = spawn(make_version())
    _, headers, _ = request(str(runtime.ready()["url"]), "GET")
    assert headers["referrer-policy"] == "same-origin"


# --- the launch token ---------------------------------------------------------------------------

EVERY_ROUTE = [("GET", "/"), ("HEAD", "/"), ("GET", "/healthz"), ("GET", "/api/info"), ("GET", "/api/notes"),
               ("GET", "/api/notes/abc123"), ("POST", "/notes"), ("POST", "/notes/abc123/delete"),
               ("POST", "/api/notes"), ("DELETE", "/api/notes/abc123"), ("GET", "/favicon.ico")]


def test_every_request_must_prove_the_token(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    ready = runtime.ready()
    base = str(ready["url"]).rstrip("/")
    port = urlsplit(base).port
    assert TOKEN not in json.dumps(ready), "the ready line never carries the token"
    body = json.dumps({"text": "sneaky"}).encode()
    wrong = [
        {},
        {"X-Desktop-Token": ""},
        {"X-Desktop-Token": TOKEN[:-1]},
        {"X-Desktop-Token": TOKEN + "x"},
        {"Cookie": f"desktop-token-{port}={TOKEN[:-1]}"},
        {"Cookie": f"desktop-token-{port + 1}={TOKEN}"},  # another runtime's cookie
        {"Authorization": f"Bearer {TOKEN}"},
    ]
    for method, path in EVERY_ROUTE:
        for headers in wrong:
            status, _, _ = request(base + path, method, body if method == "POST" else None,
                                   {"Content-Type": "application/json", **headers}, auth=False)
            assert status == 403, (method, path, headers)
    assert get_json(base + "/api/notes") == {"notes": []}
    assert TOKEN not in runtime.stderr

    status, headers, page = request(base + "/", auth=False)
    assert status == 403 and b"This page is locked" in page and b"<title>Notes" not in page
    assert TOKEN.encode() not in page
    status, _, _ = request(base + "/", headers={"X-Desktop-Token": TOKEN}, auth=False)
    assert status == 200


def test_a_browser_signs_in_once_with_the_login_link(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"]).rstrip("/")
    port = urlsplit(base).port
    for query in ("", "?token=", f"?token={TOKEN[:-1]}", f"?token={TOKEN}&token={TOKEN}"):
        status, headers, _ = request(base + "/login" + query, auth=False)
        assert status == 403 and "set-cookie" not in headers, query

    status, headers, _ = request(base + f"/login?token={TOKEN}", auth=False)
    assert (status, headers["location"]) == (303, "/")
    assert headers["referrer-policy"] == "no-referrer"
    cookie, *attributes = [part.strip() for part in headers["set-cookie"].split(";")]
    assert cookie == f"desktop-token-{port}={TOKEN}"
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert not any(a.lower().startswith(("expires", "max-age", "domain")) for a in attributes), \
        "a session cookie for this host only"

    jar = {"Cookie": f"other=1; {cookie}"}
    status, _, page = request(base + "/", headers=jar, auth=False)
    assert status == 200 and b"No notes yet" in page
    form = {**jar, "Content-Type": "application/x-www-form-urlencoded"}
    # The browser's own form post (same origin) is accepted with the cookie ...
    status, _, _ = request(base + "/notes", "POST", urlencode({"text": "from a browser"}).encode(),
                           {**form, "Origin": base, "Sec-Fetch-Site": "same-origin"}, auth=False)
    assert status == 303
    # ... one from another port of this host is the same site, so it has the cookie, and is refused.
    status, _, _ = request(base + "/notes", "POST", urlencode({"text": "sneaky"}).encode(),
                           {**form, "Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site"},
                           auth=False)
    assert status == 403
    listed = get_json(base + "/api/notes")
    assert isinstance(listed, dict) and [n["text"] for n in listed["notes"]] == ["from a browser"]


def test_without_a_token_the_runtime_makes_one_and_tells_stderr_only(
        make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version(), env={"DESKTOP_RUNTIME_TOKEN": None})
    base = str(runtime.ready()["url"]).rstrip("/")
    runtime.wait_stderr("/login?token=")
    [login] = re.findall(r"(http://127\.0\.0\.1:\d+/login\?token=\S+)", runtime.stderr)
    assert login.startswith(base)
    assert request(base + "/", headers={"X-Desktop-Token": TOKEN}, auth=False)[0] == 403
    status, headers, _ = request(login, auth=False)
    assert status == 303
    own = urlsplit(login).query.partition("=")[2]
    assert len(own) >= 32
    assert request(base + "/api/notes", headers={"X-Desktop-Token": own}, auth=False)[0] == 200
    runtime.signal(signal.SIGTERM)
    assert runtime.wait() == 0
    assert runtime.remaining_stdout() == [], "stdout carries only the ready line"


@pytest.mark.parametrize("bad", ["short", "has space in it 0123456789", "semi;colon-0123456789abcdef",
                                 "\u00e9" * 20])
def test_malformed_token_exits_6_without_echoing_it(make_version: MakeVersion, spawn: Spawn, bad: str) -> None:
    runtime = spawn(make_version(), env={"DESKTOP_RUNTIME_TOKEN": bad})
    assert runtime.wait() == 6
    assert "DESKTOP_RUNTIME_TOKEN must be" in runtime.stderr
    assert bad not in runtime.stderr
    assert runtime.remaining_stdout() == []


OTHER_USER_CLIENT = """
import http.client, json, sys
from urllib.parse import urlsplit
base, pid = sys.argv[1], sys.argv[2]
parts = urlsplit(base)
out = {}
def ask(name, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    out[name] = conn.getresponse().status
    conn.close()
ask("get_page", "GET", "/")
ask("get_notes", "GET", "/api/notes")
ask("post_note", "POST", "/api/notes", b'{"text": "planted"}', {"Content-Type": "application/json"})
ask("post_form", "POST", "/notes", b"text=planted", {"Content-Type": "application/x-www-form-urlencoded",
                                                      "Origin": base.rstrip("/")})
ask("login_guess", "GET", "/login?token=guess-guess-guess-guess")
try:
    open(f"/proc/{pid}/environ", "rb").read()
    out["environ"] = "readable"
except OSError as exc:
    out["environ"] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as another user")
def test_another_local_user_cannot_read_or_change_notes(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"])
    post_note(base, "private")
    # The other user needs an interpreter it may run: the system's, not one under /root.
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.isfile(p)), None)
    if python is None:
        pytest.skip("no system python3 for the other user")
    result = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", python, "-c", OTHER_USER_CLIENT,
         base, str(runtime.pid)],
        capture_output=True, text=True, timeout=30, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_PROXY": "127.0.0.1"}, check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"get_page": 403, "get_notes": 403, "post_note": 403, "post_form": 403, "login_guess": 403,
                    "environ": "PermissionError"}
    listed = get_json(base + "api/notes")
    assert isinstance(listed, dict) and [n["text"] for n in listed["notes"]] == ["private"]
    assert request(base, "GET")[0] == 200, "the owner, with the token, gets in"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_zero(make_version: MakeVersion, spawn: Spawn, signum: int) -> None:
    runtime = spawn(make_version())
    runtime.ready()
    runtime.signal(signum)
    assert runtime.wait() == 0
    assert "Traceback" not in runtime.stderr


def test_data_dir_falls_back_to_cwd_when_unset(
        make_version: MakeVersion, spawn: Spawn, tmp_path: Path) -> None:
    runtime = spawn(make_version(), env={"DESKTOP_RUNTIME_DATA": None})
    base = str(runtime.ready()["url"])
    assert "DESKTOP_RUNTIME_DATA is not set" in runtime.stderr
    post_note(base, "kept in the fallback")
    assert "kept in the fallback" in (tmp_path / "runtime-data" / "notes.json").read_text(encoding="utf-8")


def test_corrupt_notes_file_is_moved_aside(make_version: MakeVersion, spawn: Spawn, data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "notes.json").write_text("{ not json", encoding="utf-8")
    runtime = spawn(make_version())
    base = str(runtime.ready()["url"])
    assert get_json(base + "api/notes") == {"notes": []}
    assert "moved it aside" in runtime.stderr
    [aside] = data_dir.glob("notes.json.corrupt-*")
    assert aside.read_text(encoding="utf-8") == "{ not json"


# --- failures before ready ----------------------------------------------------------------------


def test_missing_native_dependency_exits_3(make_version: MakeVersion, spawn: Spawn) -> None:
    version_dir = make_version(native=False)
    runtime = spawn(version_dir)
    assert runtime.wait() == 3
    library = version_dir / "textstats" / "libtextstats.so"
    assert runtime.stderr.splitlines() == [f"notes-runtime: native dependency textstats missing: {library}"]
    assert runtime.remaining_stdout() == []


def test_unloadable_native_dependency_exits_3(make_version: MakeVersion, spawn: Spawn) -> None:
    version_dir = make_version(native=False)
    (version_dir / "textstats").mkdir()
    library = version_dir / "textstats" / "libtextstats.so"
    library.write_bytes(b"this is not a shared object")
    runtime = spawn(version_dir)
    assert runtime.wait() == 3
    assert f"notes-runtime: native dependency textstats missing: {library}" in runtime.stderr
    assert runtime.remaining_stdout() == []


def test_simulate_crash_at_start(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version("1.3.0", simulate="crash-at-start"))
    assert runtime.wait() == 17
    assert "notes-runtime: simulated crash at start" in runtime.stderr
    assert runtime.remaining_stdout() == []


def test_simulate_exit_clean_at_start(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version("1.3.0", simulate="exit-clean-at-start"))
    assert runtime.wait() == 0
    assert runtime.remaining_stdout() == []


def test_simulate_hang_at_start_still_stops_on_sigterm(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version("1.3.0", simulate="hang-at-start"))
    runtime.wait_stderr("simulated hang at start")
    with pytest.raises(queue.Empty):
        runtime.stdout_lines.get(timeout=0.5)
    assert runtime.proc.poll() is None
    runtime.signal(signal.SIGTERM)
    assert runtime.wait() == 0
    assert runtime.remaining_stdout() == []


def test_simulate_crash_after_ready(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version("1.3.0", simulate="crash-after-ready:0.5"))
    ready = runtime.ready()
    ready_at = time.monotonic()
    assert ready["version"] == "1.3.0"
    assert runtime.wait() == 18
    assert time.monotonic() - ready_at >= 0.3
    assert "simulated crash" in runtime.stderr


def test_unknown_simulate_value_is_ignored_with_a_warning(make_version: MakeVersion, spawn: Spawn) -> None:
    runtime = spawn(make_version("1.3.0", simulate="explode-sideways"))
    assert runtime.ready()["version"] == "1.3.0"
    assert "ignoring unknown simulate value 'explode-sideways'" in runtime.stderr


# --- no orphans ---------------------------------------------------------------------------------

INTERMEDIATE = """
import json, os, subprocess, sys, threading
env = dict(os.environ, DESKTOP_RUNTIME_PARENT_PID=str(os.getpid()))
child = subprocess.Popen([sys.executable, sys.argv[1]], env=env)
print(json.dumps({"child": child.pid}), flush=True)
threading.Event().wait()
"""


def test_runtime_exits_when_its_parent_is_killed(make_version: MakeVersion, spawn: Spawn) -> None:
    version_dir = make_version()
    entry = version_dir / "app" / "main.py"
    parent = spawn(version_dir,
                   argv=[sys.executable, "-c", INTERMEDIATE, str(entry)],
                   env={"DESKTOP_RUNTIME_PARENT_PID": None})
    child_pid = None
    ready = None
    while child_pid is None or ready is None:
        line = parent.next_line()
        assert line is not None, parent.stderr
        obj = json.loads(line)
        if "child" in obj:
            child_pid = obj["child"]
        else:
            ready = obj
    try:
        assert ready["pid"] == child_pid
        assert get_json(str(ready["url"]) + "healthz") == {"ok": True, "version": "1.2.3", "pid": child_pid}

        parent.proc.kill()
        assert parent.proc.wait(EXIT_TIMEOUT) == -signal.SIGKILL
        # The runtime shares the pipe: end of file means it has exited too.
        assert parent.next_line(timeout=5.0) is None
        parent.wait_stderr(f"parent process {parent.pid} is gone", timeout=1.0)
        deadline = time.monotonic() + 5.0
        while pid_running(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_running(child_pid)
    finally:
        if child_pid is not None and pid_running(child_pid):
            os.kill(child_pid, signal.SIGKILL)


# --- derive_runtime -----------------------------------------------------------------------------


def test_derive_runtime_rewrites_the_manifest(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(resources_dir() / "runtime", source)
    (source / "app" / "__pycache__").mkdir(exist_ok=True)
    (source / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"stale")
    (source / "textstats").mkdir()
    (source / "textstats" / "libtextstats.so").write_bytes(b"native")

    dest = derive_runtime(tmp_path / "out" / "v", "4.5.6", source=source, simulate="crash-at-start",
                          requires_shell=">=9", extra_files={"app/extra.txt": b"x", "NOTES": b"y"})
    assert dest == tmp_path / "out" / "v"
    manifest = RuntimeManifest.load(dest)
    assert (str(manifest.version), manifest.simulate, manifest.requires_shell) == ("4.5.6", "crash-at-start",
                                                                                  ">=9")
    assert manifest.name == "notes-runtime" and manifest.native == ("textstats",)
    assert not list(dest.rglob("__pycache__")) and not list(dest.rglob("*.pyc"))
    assert not (dest / "textstats").exists(), "native deps are the stager's job"
    assert (dest / "app" / "extra.txt").read_bytes() == b"x" and (dest / "NOTES").read_bytes() == b"y"
    assert (dest / "app" / "main.py").read_bytes() == (source / "app" / "main.py").read_bytes()

    with pytest.raises(FileExistsError):
        derive_runtime(dest, "4.5.7", source=source)
    with pytest.raises(ValueError):
        derive_runtime(tmp_path / "bad", "1.0.0", extra_files={"../escape": b""})


def test_derive_runtime_defaults_to_the_bundled_runtime(tmp_path: Path) -> None:
    dest = derive_runtime(tmp_path / "v", "1.2.3", extra_files={"runtime.json": b"{broken"})
    assert (dest / "app" / "main.py").is_file()
    assert (dest / "runtime.json").read_bytes() == b"{broken"

    bundled = RuntimeManifest.load(resources_dir() / "runtime")
    assert (bundled.name, str(bundled.version), bundled.entry) == ("notes-runtime", "1.0.0", "app/main.py")
    assert bundled.command == ("{python}", "{entry}") and bundled.requires_shell == ">=1.0"


def test_derived_version_verifies_once_native_deps_are_copied(
        make_version: MakeVersion, tmp_path: Path) -> None:
    version_dir = make_version("1.2.3")
    manifest = verify_version_dir(version_dir, expected=Version("1.2.3"), shell_version="1.0.0",
                                  native_root=NATIVE_DIR)
    assert manifest.native == ("textstats",)
    bare = derive_runtime(tmp_path / "bare", "1.2.3")
    with pytest.raises(NativeDepError, match="textstats"):
        verify_version_dir(bare, expected=Version("1.2.3"), shell_version="1.0.0", native_root=NATIVE_DIR)
