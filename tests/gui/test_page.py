"""The runtime's page in the real window (QtWebEngine, real input): Ctrl+R reloads the page and leaves
the runtime alone, Ctrl+Plus zooms, and notes typed in the page survive a rollback and an update."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from desktop.core.results import Running, UpdateOutcome, UpdateState
from desktop.core.shell import Shell
from desktop.ui.window import MainWindow
from tests.gui.conftest import WAIT_MS, MakeShell, activate, message_box, started, wait_running
from tests.gui.page_driver import click, input_widget, run_js, type_into
from tests.support.feed import Feed

NOTE = "Remember the milk"


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DESKTOP_NO_WEBVIEW", raising=False)
    from desktop.ui.webview import prepare_webengine, webengine_available

    if not webengine_available():
        pytest.skip("QtWebEngine is not installed")
    prepare_webengine()
    yield


def page_ready(qtbot: QtBot, window: MainWindow) -> Any:
    """The view, once it shows the page of the runtime that runs now (not the one before)."""
    view = window.web
    assert view is not None
    running = window.controller.running
    assert running is not None and running.url
    port = QUrl(running.url).port()
    qtbot.waitUntil(lambda: window.stack.currentWidget() is view and view.focusProxy() is not None,
                    timeout=WAIT_MS)

    def loaded() -> bool:
        state = run_js(qtbot, view, "JSON.stringify([location.port, document.readyState, document.title])")
        return bool(state == [str(port), "complete", state[2]] and "Notes" in state[2])
    qtbot.waitUntil(loaded, timeout=WAIT_MS)
    return view


def notes_shown(qtbot: QtBot, view: Any) -> list[str]:
    code = "JSON.stringify(Array.from(document.querySelectorAll('.note .text'), el => el.textContent))"
    return list(run_js(qtbot, view, code))


def test_ctrl_r_and_f5_reload_the_page_and_leave_the_runtime_running(qtbot: QtBot, web: None,
                                                                    shell: MakeShell) -> None:
    window, controller = started(qtbot, shell)
    view = page_ready(qtbot, window)
    activate(qtbot, window)
    assert controller.running is not None
    pid = controller.running.pid
    events: list[object] = []
    controller.runtime_event.connect(events.append)
    type_into(qtbot, view, "#text", "a draft")
    for key, modifier in ((Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier),
                          (Qt.Key.Key_F5, Qt.KeyboardModifier.NoModifier)):
        with qtbot.waitSignal(view.loadFinished, timeout=WAIT_MS):
            QTest.keyClick(input_widget(view), key, modifier)
        assert controller.running is not None and controller.running.pid == pid
        assert events == [], "the runtime was not restarted"
    restart = window.restart_action
    assert restart.text() == "Restart runtime" and [s.toString() for s in restart.shortcuts()] == ["Ctrl+Shift+R"]
    with qtbot.waitSignal(controller.runtime_event, timeout=WAIT_MS,
                          check_params_cb=lambda e: isinstance(e, Running)):
        restart.trigger()
    assert controller.running is not None and controller.running.pid != pid


def test_ctrl_plus_zooms_the_page(qtbot: QtBot, web: None, shell: MakeShell) -> None:
    window, _controller = started(qtbot, shell)
    view = page_ready(qtbot, window)
    activate(qtbot, window)
    click(qtbot, view, "h1")
    control = Qt.KeyboardModifier.ControlModifier
    QTest.keyClick(input_widget(view), Qt.Key.Key_Plus, control)
    assert view.zoomFactor() == pytest.approx(1.1)
    QTest.keyClick(input_widget(view), Qt.Key.Key_Equal, control)
    assert view.zoomFactor() == pytest.approx(1.25)
    QTest.keyClick(input_widget(view), Qt.Key.Key_Minus, control)
    assert view.zoomFactor() == pytest.approx(1.1)
    QTest.keyClick(input_widget(view), Qt.Key.Key_0, control)
    assert view.zoomFactor() == pytest.approx(1.0)


def test_notes_typed_in_the_page_survive_a_rollback_and_an_update(qtbot: QtBot, web: None, shell: MakeShell,
                                                                  feed: Feed, tmp_path: Path) -> None:
    """Item 1 and issue 10: the real page, real keys and clicks, through the window's own buttons."""
    feed.publish("1.1.0")
    assert Shell(feed.config(tmp_path / "data")).update().outcome is UpdateOutcome.STAGED
    window, controller = started(qtbot, shell, "1.1.0")
    view = page_ready(qtbot, window)
    activate(qtbot, window)
    type_into(qtbot, view, "#text", NOTE)
    with qtbot.waitSignal(view.loadFinished, timeout=WAIT_MS):
        click(qtbot, view, "form.compose button[type=submit]")
    assert "Forbidden" not in view.title()
    assert notes_shown(qtbot, view) == [NOTE]

    dialog = window.show_updates()
    qtbot.waitUntil(dialog.rollback_button.isEnabled, timeout=WAIT_MS)
    qtbot.mouseClick(dialog.rollback_button, Qt.MouseButton.LeftButton)
    box = message_box(qtbot, window)
    qtbot.mouseClick(next(b for b in box.buttons() if b.objectName() == "confirm-roll-back"),
                     Qt.MouseButton.LeftButton)
    wait_running(qtbot, window, "1.0.0")
    dialog.close()
    assert (tmp_path / "data" / "runtime-data").is_dir()
    view = page_ready(qtbot, window)
    qtbot.waitUntil(lambda: notes_shown(qtbot, view) == [NOTE], timeout=WAIT_MS)

    feed.publish("1.2.0")
    with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
        window.check_action.trigger()
    assert controller.view.state is UpdateState.STAGED and str(controller.view.release.version) == "1.2.0"
    window.banner.button("restart-to-update").click()
    wait_running(qtbot, window, "1.2.0")
    view = page_ready(qtbot, window)
    qtbot.waitUntil(lambda: notes_shown(qtbot, view) == [NOTE], timeout=WAIT_MS)
    assert "runtime 1.2.0" in run_js(qtbot, view, "JSON.stringify(document.body.innerText)")
