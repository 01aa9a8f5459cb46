"""Errors in plain words: no errno, no exception names, "offline" only when the machine is offline,
and Copy details with what a support person needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from pytestqt.qtbot import QtBot

from desktop.core.results import Problem, UpdateState
from tests.gui.conftest import WAIT_MS, MakeShell, check, started, visible_texts
from tests.support.feed import Feed

REPO = Path(__file__).resolve().parents[2]
TECHNICAL = ("Errno", "Name or service", "Error", "Exception", "Traceback", "httpx", "[", "HTTP 404")


def plain(texts: list[tuple[str, str]]) -> list[str]:
    """The visible texts that still look technical."""
    return [text for _kind, text in texts if any(word in text for word in TECHNICAL)]


def test_an_unknown_server_name_is_said_in_plain_words(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                       tmp_path: Path) -> None:
    config = feed.config(tmp_path / "data").with_overrides(registry_url="https://updates.invalid/feed")
    window, controller = started(qtbot, shell, config=config)
    check(qtbot, window, controller)
    assert controller.view.problem is Problem.UNREACHABLE, "this machine is online: it is the server"
    assert "Name or service not known" in controller.view.detail
    text = window.update_label.full_text()
    assert text.startswith("The update server can't be reached right now.")
    assert "The app will try again at " in text
    assert "offline" not in text.lower()
    dialog = window.show_updates()
    assert dialog.problem_box.isVisible() and dialog.copy_button.isVisible()
    notice = window.banner.notice
    assert notice is not None and notice.title == "Couldn't check for updates."
    assert plain(visible_texts(window)) == [] and plain(visible_texts(dialog)) == []
    window.banner.button("copy-details").click()
    details = QGuiApplication.clipboard().text()
    assert details.startswith("Desktop Shell 1.0.0\nRuntime: 1.0.0 (bundled)\n")
    assert "What happened: Couldn't check for updates. The update server can't be reached" in details
    assert "Reason: cannot reach updates.invalid" in details and "Name or service not known" in details
    assert "Errno" not in details


def test_a_server_that_refuses_is_unreachable_not_offline(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                          tmp_path: Path) -> None:
    config = feed.config(tmp_path / "data").with_overrides(registry_url="http://127.0.0.1:9/feed")
    window, controller = started(qtbot, shell, config=config)
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.OFFLINE and controller.view.problem is Problem.UNREACHABLE
    assert window.update_label.full_text().startswith("The update server can't be reached right now.")
    assert controller.check_timer.isActive(), "a retry is scheduled"
    assert plain(visible_texts(window)) == []


OFFLINE_PROBE = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["DESKTOP_NO_WEBVIEW"] = "1"
from PySide6.QtWidgets import QApplication
app = QApplication([])
from desktop.core.shell import Shell
from desktop.ui.controller import ShellController
from desktop.ui.window import MainWindow
shell = Shell.open(data_dir=sys.argv[1], registry="https://updates.example.com/feed", registry_kind="feed",
                   public_key=sys.argv[2])
controller = ShellController(shell, initial_delay_s=3600)
window = MainWindow(controller)
def done(view):
    print(view.problem.value, "|", window.update_label.full_text(), flush=True)
    app.quit()
controller.check_finished.connect(done)
controller.check_now(manual=True)
app.exec()
"""


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs unshare and root")
def test_offline_is_said_only_when_the_machine_is_offline(feed: Feed, tmp_path: Path) -> None:
    """The same check in a network namespace with no network at all: now it is "offline"."""
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", OFFLINE_PROBE, str(tmp_path / "data"),
                             feed.key.public], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    problem, text = result.stdout.strip().split(" | ", 1)
    assert problem == "offline"
    assert text == "You're offline. The app will check for updates when you're back online."


def test_copy_details_of_a_failed_start_has_versions_reason_and_output(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                       tmp_path: Path) -> None:
    feed.publish("1.1.0", simulate="crash-at-start")
    window, controller = started(qtbot, shell)
    check(qtbot, window, controller)
    window.banner.button("restart-to-update").click()
    qtbot.waitUntil(lambda: window.banner.notice is not None and window.banner.notice.key == "start-failed:1.1.0",
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: controller.running is not None, timeout=WAIT_MS)
    window.banner.button("copy-details").click()
    details = QGuiApplication.clipboard().text()
    assert "Runtime: 1.0.0 (bundled)" in details
    assert "What happened: Version 1.1.0 couldn't start." in details
    assert "Reason: exit code 17" in details
    assert "Runtime output (last lines):" in details and "simulated crash at start" in details
    assert plain(visible_texts(window)) == []
