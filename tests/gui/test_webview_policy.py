"""The web view against a hostile runtime page: only a user's link click reaches the system.

A real page on a loopback server is shown as the runtime (with a token); a second loopback
server stands for "elsewhere". The opener is a fake that records what would reach the OS.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QObject, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWebEngineCore import QWebEngineSettings
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from desktop.ui import webview
from tests.gui.page_driver import TIMEOUT_MS, click, click_link, dispose, run_js, type_text
from tests.support.server import LoopbackServer

HTML = "text/html; charset=utf-8"

AUTO = """<!doctype html><html><head><meta charset="utf-8"><title>running</title>
<meta http-equiv="refresh" content="0;url=https://example.invalid/meta-refresh"></head><body>
<a id="https" href="https://example.invalid/script-clicked">scripted link</a>
<a id="blank" target="_blank" href="https://example.invalid/script-blank">scripted new tab</a>
<iframe src="ELSEWHERE/framed"></iframe>
<iframe src="/inner"></iframe>
<form id="steal" method="post" action="ELSEWHERE/steal"><input name="a" value="b"></form>
<img src="ELSEWHERE/pixel.png" alt="">
<script>
  window.open("https://example.invalid/popup");
  document.getElementById("https").click();
  document.getElementById("blank").click();
  fetch("ELSEWHERE/beacon", {method: "POST", body: "x", mode: "no-cors"}).catch(() => {});
  try { new WebSocket("ELSEWHERE/socket".replace("http:", "ws:")); } catch (e) {}
  document.getElementById("steal").submit();
  let n = 0;
  const loop = setInterval(() => {
    n += 1;
    location = n % 2 ? "https://example.invalid/loop" + n : "vscode://file/loop" + n;
    if (n >= 20) { clearInterval(loop); setTimeout(() => { document.title = "done"; }, 300); }
  }, 40);
</script></body></html>"""

INNER = """<!doctype html><script>location = "https://example.invalid/from-subframe";</script>"""

LINKS = """<!doctype html><html><head><meta charset="utf-8"><title>links</title>
<style>a, div { display: block; height: 30px; margin: 4px; background: #eee; }</style></head><body>
<a id="smb" href="smb://fileserver/share">smb</a>
<a id="vscode" href="vscode://file/etc/passwd">vscode</a>
<a id="msdt" href="ms-msdt:/id%20PCWDiagnostic%20/skip%20force">ms-msdt</a>
<a id="file" href="file:///etc/passwd">file</a>
<a id="creds" href="https://bank.example@example.invalid/">credentials</a>
<a id="swap" href="https://example.invalid/shown"
   onclick="location = 'https://example.invalid/swapped'; return false">swapped on click</a>
<div id="anywhere">not a link</div>
<a id="consumed" href="https://example.invalid/later"
   onclick="window.open('about:blank'); setTimeout(() => { location = this.href; }, 100); return false">
   spends the click on a pop-up, then navigates by script</a>
<input id="field" placeholder="typing here navigates">
<a id="https" href="https://example.invalid/clicked">https</a>
<a id="mailto" href="mailto:someone@example.invalid">mail</a>
<a id="blank" target="_blank" href="https://example.invalid/new-tab">new tab</a>
<a id="local" href="/second">same origin</a>
<script>
  document.getElementById("field").addEventListener("keydown", (event) => {
    setTimeout(() => { location = "https://example.invalid/after-typing-" + event.key; }, 50);
  });
  document.getElementById("anywhere").addEventListener("click", () => {
    setTimeout(() => { location = "https://example.invalid/after-any-click"; }, 50);
  });
</script></body></html>"""

DOWNLOADS = """<!doctype html><html><head><meta charset="utf-8"><title>downloads</title></head><body>
<a id="bin" href="/file.bin" style="display:block;height:30px">binary</a>
<a id="attr" href="/notes.txt" download="notes.txt" style="display:block;height:30px">download attribute</a>
</body></html>"""

DIALOGS = """<!doctype html><html><head><meta charset="utf-8"><title>dialogs</title></head><body><script>
  alert("first");
  const answer = confirm("Delete everything?");
  const name = prompt("Your name?", "x");
  document.title = JSON.stringify({answer: answer, name: name});
</script></body></html>"""

SOCKET = """<!doctype html><html><head><meta charset="utf-8"><title>socket</title></head><body><script>
  const socket = new WebSocket(location.origin.replace("http:", "ws:") + "/socket");
  socket.onclose = () => { document.title = "closed"; };
</script></body></html>"""

UNLOAD = """<!doctype html><html><head><meta charset="utf-8"><title>sticky</title></head><body>
<button id="b" style="height:40px">touch me</button>
<script>window.addEventListener("beforeunload", (e) => { e.preventDefault(); e.returnValue = "stay"; });</script>
</body></html>"""


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


@pytest.fixture(scope="module")
def hostile(elsewhere: LoopbackServer) -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        for path, page in {"/auto": AUTO, "/inner": INNER, "/links": LINKS, "/downloads": DOWNLOADS,
                           "/dialogs": DIALOGS, "/unload": UNLOAD,
                           "/socket": SOCKET}.items():
            server.put(path, page.replace("ELSEWHERE", elsewhere.url).encode(), HTML)
        server.put("/second", b"<!doctype html><title>second</title><p>second page", HTML)
        server.put("/file.bin", b"\x00\x01" * 4096)
        server.put("/notes.txt", b"plain text\n", "text/plain")
        yield server


class DesktopServicesSpy(QObject):
    """Catches QDesktopServices.openUrl for the schemes a page might push at the desktop."""

    SCHEMES = ("http", "https", "mailto", "smb", "vscode", "ms-msdt", "file")

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    @Slot(QUrl)
    def handle(self, url: QUrl) -> None:
        self.opened.append(url.toString())

    def __enter__(self) -> DesktopServicesSpy:
        for scheme in self.SCHEMES:
            QDesktopServices.setUrlHandler(scheme, self, "handle")
        return self

    def __exit__(self, *exc: object) -> None:
        for scheme in self.SCHEMES:
            QDesktopServices.unsetUrlHandler(scheme)


class Recorder:
    """What would have reached the operating system."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, url: QUrl) -> bool:
        self.opened.append(url.toString())
        return True


def new_view(opener: Recorder) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DESKTOP_NO_WEBVIEW", raising=False)
        view = webview.make_view(opener=opener)
    if view is None:
        pytest.skip("QtWebEngine is not installed")
    view.resize(900, 700)
    view.show()
    return view


@pytest.fixture(scope="module")
def shared(qapp: QApplication) -> Iterator[tuple[Any, Recorder]]:
    opener = Recorder()
    view = new_view(opener)
    yield view, opener
    dispose(view)


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(32)


def show(qtbot: QtBot, view: Any, server: LoopbackServer, path: str, token: str) -> None:
    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS):
        view.show_runtime(server.url + path, token)


def still_on(view: Any, server: LoopbackServer) -> bool:
    return webview.same_origin(view.url(), QUrl(server.url))


def test_script_frame_form_and_popup_navigations_never_leave(
        qtbot: QtBot, qapp: QApplication, hostile: LoopbackServer, elsewhere: LoopbackServer, token: str,
        caplog: pytest.LogCaptureFixture) -> None:
    opener = Recorder()
    view = new_view(opener)
    try:
        blocked: list[str] = []
        view.blocked.connect(blocked.append)
        hostile.clear_requests()
        elsewhere.clear_requests()
        with caplog.at_level(logging.WARNING, logger="desktop.ui.webview"):
            show(qtbot, view, hostile, "/auto", token)
            qtbot.waitUntil(lambda: view.title() == "done", timeout=TIMEOUT_MS)
            qtbot.wait(300)  # anything still in flight is decided by now
        assert opener.opened == []
        assert elsewhere.requests == [], "nothing but the runtime is contacted"
        assert still_on(view, hostile) and view.url().path() == "/auto"
        # 20 navigations, a pop-up, a form, frames and requests: dropped, but logged only a few times
        logged = [r for r in caplog.records if r.name == "desktop.ui.webview"]
        assert 1 <= len(logged) <= 6, [r.getMessage() for r in logged]
        assert blocked and len(blocked) <= 5
        assert all("\n" not in line for line in blocked)
        served = [r for r in hostile.requests if r.path in ("/auto", "/inner")]
        assert {r.path for r in served} == {"/auto", "/inner"}
        assert all(r.headers.get("x-desktop-token") == token for r in served)
    finally:
        dispose(view)


def test_only_a_users_click_on_an_http_or_mail_link_reaches_the_system(
        qtbot: QtBot, shared: tuple[Any, Recorder], hostile: LoopbackServer, elsewhere: LoopbackServer,
        token: str) -> None:
    view, opener = shared
    opener.opened.clear()
    elsewhere.clear_requests()
    show(qtbot, view, hostile, "/links", token)
    with DesktopServicesSpy() as desktop:
        for link in ("#smb", "#vscode", "#msdt", "#file", "#creds", "#swap"):
            click_link(qtbot, view, link)
        click_link(qtbot, view, "#consumed")
        qtbot.wait(400)  # the page navigates 100 ms after that click
        click(qtbot, view, "#anywhere")
        qtbot.wait(300)  # and 50 ms after this one
        click(qtbot, view, "#field")
        type_text(view, "x")  # a key press is a user activation for Chromium, not a link click
        qtbot.wait(300)
    assert opener.opened == []
    assert desktop.opened == [], "Qt did not hand an unknown scheme to the desktop behind our back"

    expected = []
    for link in ("#https", "#mailto", "#blank"):
        expected.append(click_link(qtbot, view, link))
        qtbot.waitUntil(lambda: len(opener.opened) == len(expected), timeout=TIMEOUT_MS)
    qtbot.wait(300)
    assert opener.opened == expected == [
        "https://example.invalid/clicked", "mailto:someone@example.invalid", "https://example.invalid/new-tab"]
    assert still_on(view, hostile) and view.url().path() == "/links"
    assert elsewhere.requests == []

    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS):
        click_link(qtbot, view, "#local")
    assert view.url().path() == "/second", "links within the runtime stay in the view"
    assert len(opener.opened) == 3


def test_a_websocket_to_the_runtime_proves_the_token(
        qtbot: QtBot, shared: tuple[Any, Recorder], hostile: LoopbackServer, token: str) -> None:
    view, _ = shared
    show(qtbot, view, hostile, "/socket", token)
    qtbot.waitUntil(lambda: view.title() == "closed", timeout=TIMEOUT_MS)  # the server is no WebSocket server
    [handshake] = [r for r in hostile.requests_to("/socket") if r.headers.get("upgrade", "").lower() == "websocket"]
    assert handshake.headers.get("x-desktop-token") == token


def test_downloads_are_refused_and_nothing_is_written(
        qtbot: QtBot, shared: tuple[Any, Recorder], hostile: LoopbackServer, token: str, tmp_path: Path) -> None:
    view, opener = shared
    opener.opened.clear()
    target = tmp_path / "downloads"
    target.mkdir()
    view.page().profile().setDownloadPath(str(target))
    show(qtbot, view, hostile, "/downloads", token)
    refused: list[str] = []
    view.download_refused.connect(refused.append)
    try:
        for link in ("#bin", "#attr"):
            with qtbot.waitSignal(view.download_refused, timeout=TIMEOUT_MS):
                click_link(qtbot, view, link)
        qtbot.wait(300)
    finally:
        view.download_refused.disconnect(refused.append)
    assert refused == [hostile.url + "/file.bin", hostile.url + "/notes.txt"]
    assert list(target.iterdir()) == []
    assert opener.opened == []
    assert still_on(view, hostile)


def test_script_dialogs_do_not_block_the_shell(
        qtbot: QtBot, shared: tuple[Any, Recorder], hostile: LoopbackServer, token: str) -> None:
    view, _ = shared
    show(qtbot, view, hostile, "/dialogs", token)
    qtbot.waitUntil(lambda: view.title().startswith("{"), timeout=TIMEOUT_MS)
    assert json.loads(view.title()) == {"answer": False, "name": None}
    assert QApplication.activeModalWidget() is None


def test_a_page_cannot_keep_the_shell_from_replacing_it(
        qtbot: QtBot, shared: tuple[Any, Recorder], hostile: LoopbackServer, token: str) -> None:
    view, _ = shared
    show(qtbot, view, hostile, "/unload", token)
    click(qtbot, view, "#b")  # beforeunload only asks after the user touched the page
    for _ in range(100):
        if run_js(qtbot, view, "JSON.stringify(navigator.userActivation.hasBeenActive)") is True:
            break
        qtbot.wait(50)
    else:
        pytest.fail("the click never reached the page")
    show(qtbot, view, hostile, "/second", token)
    assert view.url().path() == "/second"


def test_local_files_and_unknown_schemes_are_off(shared: tuple[Any, Recorder]) -> None:
    view, _ = shared
    settings = view.page().settings()
    attribute = QWebEngineSettings.WebAttribute
    for off in (attribute.LocalContentCanAccessFileUrls, attribute.LocalContentCanAccessRemoteUrls,
                attribute.NavigateOnDropEnabled, attribute.AllowRunningInsecureContent):
        assert not settings.testAttribute(off), off
    assert view.page().profile().isOffTheRecord()


def test_clear_forgets_the_runtime_and_its_token(
        qtbot: QtBot, shared: tuple[Any, Recorder], hostile: LoopbackServer, token: str) -> None:
    view, _ = shared
    show(qtbot, view, hostile, "/second", token)
    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS):
        view.clear()
    assert view.url() == QUrl("about:blank") and view.runtime_url() is None
    hostile.clear_requests()
    run_js(qtbot, view, f"fetch({json.dumps(hostile.url + '/second')}).catch(() => {{}}); '1'")
    qtbot.wait(300)
    assert hostile.requests == [], "a forgotten runtime is not contacted"


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "data:text/html,<h1>hi</h1>",
    "https://127.0.0.1:8443/",
    "http://example.com:80/",
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/\nforged log line",
    "http://user:secret@127.0.0.1:8080/",
    "javascript:alert(1)",
    "",
])
def test_show_runtime_refuses_anything_but_loopback_http(
        shared: tuple[Any, Recorder], url: str, token: str) -> None:
    view, _ = shared
    before = view.url()
    with pytest.raises(ValueError):
        view.show_runtime(url, token)
    assert view.url() == before


@pytest.mark.parametrize("bad", ["", "with space", "line\r\nX-Injected: 1", "é" * 20])
def test_show_runtime_refuses_a_token_that_is_not_a_header_value(
        shared: tuple[Any, Recorder], hostile: LoopbackServer, bad: str) -> None:
    view, _ = shared
    with pytest.raises(ValueError):
        view.show_runtime(hostile.url + "/second", bad)
