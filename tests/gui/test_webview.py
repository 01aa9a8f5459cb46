"""The web view's rules without Chromium: library path, runtime URL, token, what may leave, real input."""

from __future__ import annotations

import logging
import os
import sys

import pytest
from PySide6.QtCore import QEvent, QPointF, Qt, QUrl
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from desktop.ui.webview import (
    RateLimitedLog,
    Verdict,
    check_token,
    checked_runtime_url,
    describe,
    login_url,
    navigation_verdict,
    same_origin,
    user_library_path,
)


def test_frozen_app_hands_the_users_library_path_to_outside_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/app/_internal")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/home/user/lib")
    with user_library_path():
        assert os.environ["LD_LIBRARY_PATH"] == "/home/user/lib"
        assert "LD_LIBRARY_PATH_ORIG" not in os.environ
    assert os.environ["LD_LIBRARY_PATH"] == "/opt/app/_internal"
    assert os.environ["LD_LIBRARY_PATH_ORIG"] == "/home/user/lib"


def test_unfrozen_environment_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/some/where")
    with user_library_path():
        assert os.environ["LD_LIBRARY_PATH"] == "/some/where"


def test_same_origin_is_scheme_host_and_port() -> None:
    base = QUrl("http://127.0.0.1:4000/")
    assert same_origin(QUrl("http://127.0.0.1:4000/notes?x=1"), base)
    assert not same_origin(QUrl("http://127.0.0.1:4001/"), base)
    assert not same_origin(QUrl("https://example.com/"), base)


# --- the runtime's URL and token ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:4000/", "http://localhost:1/notes?x=1", "http://[::1]:65535/",
                                 "http://127.0.0.1:4000"])
def test_loopback_http_with_a_port_is_a_runtime_url(url: str) -> None:
    assert checked_runtime_url(url) == QUrl(url)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "data:text/html,hi", "https://127.0.0.1:4000/", "http://127.0.0.1/",
    "http://127.0.0.1:0/", "http://example.com:4000/", "http://127.0.0.2:4000/", "http://0.0.0.0:4000/",
    "http://127.0.0.1.evil.example:4000/", "http://user:pw@127.0.0.1:4000/", "http://127.0.0.1:4000/\r\nX: y",
    "http://127.0.0.1:4000/ a", "javascript:alert(1)", "ftp://127.0.0.1:21/", "", "//127.0.0.1:4000/",
    "HTTP://127.0.0.1:4000/\x00",
])
def test_anything_else_is_refused_as_a_runtime_url(url: str) -> None:
    with pytest.raises(ValueError):
        checked_runtime_url(url)


def test_token_must_travel_as_a_header_value() -> None:
    assert check_token("abc-DEF_123.~!") == b"abc-DEF_123.~!"
    for bad in ("", "a b", "a\r\nb", "é", "tab\there"):
        with pytest.raises(ValueError):
            check_token(bad)


def test_login_url_carries_the_token_to_the_runtimes_login() -> None:
    assert login_url("http://127.0.0.1:4000/notes#x", "t0k+n/=").toString() == \
        "http://127.0.0.1:4000/login?token=t0k%2Bn%2F%3D"
    assert login_url("http://[::1]:4000/", "token").toString() == "http://[::1]:4000/login?token=token"
    with pytest.raises(ValueError):
        login_url("https://example.com:4000/", "token")


def test_described_urls_lose_credentials_and_control_characters() -> None:
    assert describe(QUrl("https://user:secret@example.com/a b")) == "https://example.com/a%20b"
    shown = describe(QUrl("https://example.com/" + "x" * 500))
    assert len(shown) <= 201 and shown.endswith("…")
    assert "\n" not in describe(QUrl("https://example.com/\nforged"))


# --- what leaves the view ----------------------------------------------------------------------

RUNTIME = QUrl("http://127.0.0.1:4000/")


@pytest.mark.parametrize(("target", "main_frame", "link_click", "user", "verdict"), [
    ("http://127.0.0.1:4000/notes", True, False, False, Verdict.SHOW),
    ("http://127.0.0.1:4000/frame", False, False, False, Verdict.SHOW),
    ("about:blank", False, False, False, Verdict.SHOW),
    ("about:srcdoc", False, False, False, Verdict.SHOW),
    ("about:blank", True, False, False, Verdict.DROP),
    ("http://localhost:4000/", True, True, True, Verdict.EXTERNAL),  # another origin for the browser
    ("http://127.0.0.1:4001/", True, True, True, Verdict.EXTERNAL),
    ("https://example.com/", True, True, True, Verdict.EXTERNAL),
    ("mailto:someone@example.com", True, True, True, Verdict.EXTERNAL),
    ("https://example.com/", True, True, False, Verdict.DROP),  # script
    ("https://example.com/", False, True, True, Verdict.DROP),  # subframe
    ("https://example.com/", True, False, True, Verdict.DROP),  # form post, redirect, ...
    ("https://bank.example@evil.example/", True, True, True, Verdict.DROP),
    ("mailto:", True, True, True, Verdict.DROP),
    ("smb://server/share", True, True, True, Verdict.DROP),
    ("vscode://file/etc/passwd", True, True, True, Verdict.DROP),
    ("ms-msdt:/id PCWDiagnostic", True, True, True, Verdict.DROP),
    ("file:///etc/passwd", True, True, True, Verdict.DROP),
    ("data:text/html,hi", True, True, True, Verdict.DROP),
    ("javascript:alert(1)", True, True, True, Verdict.DROP),
])
def test_navigation_verdicts(target: str, main_frame: bool, link_click: bool, user: bool, verdict: Verdict) -> None:
    assert navigation_verdict(QUrl(target), RUNTIME, main_frame=main_frame, link_click=link_click,
                              user_initiated=user) is verdict


def test_nothing_is_shown_before_the_runtime_is_known() -> None:
    assert navigation_verdict(RUNTIME, None, main_frame=True, link_click=False, user_initiated=True) is Verdict.DROP


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_keeps_a_burst_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logger = logging.getLogger("tests.ratelimit")
    limited = RateLimitedLog(logger, burst=3, period_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.ratelimit"):
        results = [limited.warning(f"dropped {i}") for i in range(57)]
        assert results == [True] * 3 + [False] * 54
        clock.now += 10.0
        assert limited.warning("later")
    assert [r.getMessage() for r in caplog.records] == [
        "web view: dropped 0", "web view: dropped 1", "web view: dropped 2",
        "web view: 54 more like this suppressed", "web view: later"]


# --- real input ----------------------------------------------------------------------------------


def test_a_click_on_a_link_lets_one_navigation_to_it_leave(qtbot: QtBot) -> None:
    from desktop.ui.runtime_view import GestureGate

    widget = QWidget()
    qtbot.addWidget(widget)
    clock = FakeClock()
    gate = GestureGate(widget, clock=clock)
    link = QUrl("https://example.com/a")
    assert not gate.take(link), "no input, no navigation"

    gate.hover(link.toString())
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)
    assert gate.take(link)
    assert not gate.take(link), "one click, one navigation"

    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)
    assert not gate.take(QUrl("https://example.com/elsewhere")), "not the link under the pointer"
    assert not gate.take(link), "used up by the wrong one"

    gate.hover("")
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)
    assert not gate.take(link), "a click beside any link"

    gate.hover(link.toString())
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)
    clock.now += 5.1
    assert not gate.take(link), "too long ago"

    QTest.mouseClick(widget, Qt.MouseButton.RightButton)
    assert not gate.take(link), "a context-menu click is not a link click"

    QTest.keyClick(widget, Qt.Key.Key_A)
    assert not gate.take(link), "typing is not activating a link"
    QTest.keyClick(widget, Qt.Key.Key_Return)
    assert gate.take(QUrl("https://example.com/any")), "Enter on a focused link has no pointer to check"


def test_input_the_app_sends_itself_does_not_count(qtbot: QtBot) -> None:
    from desktop.ui.runtime_view import GestureGate

    widget = QWidget()
    qtbot.addWidget(widget)
    gate = GestureGate(widget)
    gate.hover("https://example.com/a")
    point = QPointF(1, 1)
    for kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
        QApplication.sendEvent(widget, QMouseEvent(kind, point, point, Qt.MouseButton.LeftButton,
                                                   Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    assert not gate.take(QUrl("https://example.com/a"))


def test_input_on_widgets_added_later_counts(qtbot: QtBot) -> None:
    from desktop.ui.runtime_view import GestureGate

    view = QWidget()
    qtbot.addWidget(view)
    gate = GestureGate(view)
    child = QWidget(view)  # as Chromium's input widget is added once a page renders
    QTest.keyClick(child, Qt.Key.Key_Return)
    assert gate.take(QUrl("https://example.com/"))
