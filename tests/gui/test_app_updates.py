"""The window and the app's own updates: a staged app offers "Restart to update" and quits with the
launcher's code, the health mark follows the window, the admin policy is shown and obeyed, and app
versions that failed to start are listed and allowed again.

Everything is real: per-user install roots on disk (tests/support/installs.py), fake shell builds
published on a signed feed served on 127.0.0.1, policy files read through DESKTOP_POLICY_FILE.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.version import Version
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox
from pytestqt.qtbot import QtBot

from desktop.core.badlist import BadVersions
from desktop.core.install import health
from desktop.core.install.admin import POLICY_ENV
from desktop.core.install.root import HEALTH_MARK_ENV, LAUNCHER_ENV, RESTART_EXIT_CODE, InstallRoot
from desktop.core.pointer import read_pointer
from desktop.core.results import ShellUpdates, UpdateOutcome, UpdateState
from desktop.core.shell import Shell
from desktop.ui.app import run_gui
from desktop.ui.window import MainWindow
from tests.gui.conftest import WAIT_MS, MakeShell, check, started
from tests.support import installs
from tests.support.feed import Feed
from tests.support.installs import publish_shell
from tests.support.server import LoopbackServer
from tests.support.shells import wait_dead

PACKAGE_MESSAGE = "Desktop Shell itself is updated by your system's package manager."
GAVE_UP = 99  # run_app's own exit code when nothing ended the event loop in time


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallRoot:
    """A per-user install of the app at 1.0.0, not started by the launcher."""
    return installs.use_root(tmp_path / "app", monkeypatch)


@pytest.fixture
def launcher(install: InstallRoot, monkeypatch: pytest.MonkeyPatch) -> InstallRoot:
    """The same install, started by its launcher (which restarts the app on RESTART_EXIT_CODE)."""
    monkeypatch.setenv(LAUNCHER_ENV, str(install.launcher))
    return install


def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **rules: object) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(rules))
    monkeypatch.setenv(POLICY_ENV, str(path))
    return path


def publish_app(feed: Feed, tmp_path: Path, version: str) -> None:
    publish_shell(feed.root, feed.key.private_path, tmp_path / "builds", version)


def stage_app(feed: Feed, tmp_path: Path, version: str) -> None:
    """A newer app, staged before the window starts (by an earlier run, or `desktop update`)."""
    publish_app(feed, tmp_path, version)
    report = Shell(feed.config(tmp_path / "data")).update_shell()
    assert (report.outcome, str(report.version)) == (UpdateOutcome.STAGED, version)


@pytest.fixture
def run_app(qtbot: QtBot, qapp: QApplication) -> Iterator[Callable[..., int]]:
    """run(shell, act, before=None) -> exit code: the app as `desktop run` runs it (run_gui, its event
    loop, its exit code). `before(controller)` runs before the window exists; `act(window)` once the
    event loop runs."""
    handled = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
    saved = {s: signal.getsignal(s) for s in handled}
    logger = logging.getLogger("desktop")
    handlers = list(logger.handlers)
    quit_on_close = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)  # as the app's own QApplication (desktop.ui.app.ensure_app)

    def run(shell: Shell, act: Callable[[MainWindow], None],
            before: Callable[[object], None] | None = None) -> int:
        def on_controller(controller: object) -> None:
            if before is not None:
                before(controller)

            def in_the_loop() -> None:
                window = next(w for w in QApplication.topLevelWidgets()
                              if isinstance(w, MainWindow) and w.controller is controller)
                qtbot.addWidget(window)
                act(window)
            QTimer.singleShot(0, in_the_loop)

        guard = QTimer()
        guard.setSingleShot(True)
        guard.timeout.connect(lambda: QApplication.exit(GAVE_UP))
        guard.start(WAIT_MS * 2)
        try:
            return run_gui(shell, initial_delay_s=3600, on_controller=on_controller)
        finally:
            guard.stop()

    yield run
    qapp.setQuitOnLastWindowClosed(quit_on_close)
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()


# -- "Restart to update" for the app itself ---------------------------------------------------------

def test_an_app_staged_by_a_check_offers_restart_and_the_click_quits_with_the_launchers_code(
        qtbot: QtBot, shell: MakeShell, feed: Feed, launcher: InstallRoot, tmp_path: Path) -> None:
    publish_app(feed, tmp_path, "1.1.0")
    window, controller = started(qtbot, shell)
    runtime = controller.running.pid if controller.running else 0
    assert window.banner.button("restart-app") is None and not window.restart_app_action.isVisible()
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.UP_TO_DATE, "the runtime itself had nothing new"
    assert window.update_label.full_text() == "You're up to date"
    qtbot.waitUntil(lambda: window.banner.notice is not None and window.banner.notice.key == "app-ready:1.1.0",
                    timeout=WAIT_MS)
    assert window.banner.notice.title == "Version 1.1.0 of the app is ready."
    assert "Restart the app" in window.banner.notice.text
    assert window.restart_app_action.isVisible() and window.restart_app_action.text() == "Restart to update the app"
    assert read_pointer(launcher.pointer_file).version == Version("1.1.0")  # type: ignore[union-attr]
    button = window.banner.button("restart-app")
    assert button is not None and button.text() == "Restart to update" and button.isVisible()
    with qtbot.waitSignal(window.quit_requested, timeout=WAIT_MS) as quit_signal:
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        assert not window.isVisible(), "the window goes at once"
    assert quit_signal.args == [RESTART_EXIT_CODE]
    assert wait_dead(runtime, 5), "the runtime is stopped before the new app starts it again"


def test_an_app_staged_before_the_start_is_restarted_from_the_updates_panel_and_run_gui_returns_the_code(
        qtbot: QtBot, feed: Feed, launcher: InstallRoot, tmp_path: Path,
        run_app: Callable[..., int]) -> None:
    stage_app(feed, tmp_path, "1.1.0")
    seen: dict[str, object] = {}

    def act(window: MainWindow) -> None:
        dialog = window.show_updates()
        qtbot.waitUntil(dialog.app.restart_button.isVisible, timeout=WAIT_MS)
        seen["status"] = dialog.app.status.text()
        seen["version"] = dialog.app.version.text()
        qtbot.mouseClick(dialog.app.restart_button, Qt.MouseButton.LeftButton)

    code = run_app(Shell(feed.config(tmp_path / "data")), act)
    assert code == RESTART_EXIT_CODE
    assert seen == {"status": "Version 1.1.0 of the app is ready — restart the app to update it.",
                    "version": "Desktop Shell 1.0.0"}


def test_without_the_launcher_the_new_app_waits_for_the_next_start(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                   install: InstallRoot, tmp_path: Path) -> None:
    stage_app(feed, tmp_path, "1.1.0")
    window, controller = started(qtbot, shell)
    qtbot.waitUntil(lambda: window.banner.notice is not None and window.banner.notice.key == "app-ready:1.1.0",
                    timeout=WAIT_MS)
    assert window.banner.notice.text == "It is used the next time you start the app."
    assert window.banner.button("restart-app") is None
    assert not window.restart_app_action.isVisible()
    window.restart_app()  # even if asked: nothing could start the new app now, so the app keeps running
    assert window.isVisible() and not controller.shutting_down
    dialog = window.show_updates()
    assert dialog.app.status.text() == "Version 1.1.0 of the app is ready; it is used the next time the app starts."
    assert not dialog.app.restart_button.isVisible()


# -- the health mark ------------------------------------------------------------------------------

@pytest.fixture
def health_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The mark the launcher names; this process takes it from the environment as main() does."""
    mark = tmp_path / "health" / "1.ok"
    mark.parent.mkdir()
    monkeypatch.setenv(HEALTH_MARK_ENV, str(mark))
    assert health.take_from_environment() == mark
    yield mark
    Shell.report_healthy()  # nothing of this test's mark is left for another one


def test_the_health_mark_is_written_once_the_window_shows_and_not_before(
        qtbot: QtBot, feed: Feed, tmp_path: Path, health_mark: Path, run_app: Callable[..., int]) -> None:
    seen: dict[str, bool] = {}

    def before(controller: object) -> None:
        seen["before the window"] = health_mark.exists()

    def act(window: MainWindow) -> None:
        seen["window shown"] = window.isVisible()
        qtbot.waitUntil(health_mark.exists, timeout=WAIT_MS)
        window.request_quit()

    assert run_app(Shell(feed.config(tmp_path / "data")), act, before) == 0
    assert seen == {"before the window": False, "window shown": True}
    mark = json.loads(health_mark.read_text())
    assert mark["pid"] == os.getpid() and mark["version"] == "1.0.0"


# -- the admin policy --------------------------------------------------------------------------------

def test_a_policy_in_force_is_shown_and_its_channel_is_locked(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                              tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    policy(tmp_path, monkeypatch, channel="beta", message="Updates are managed by Example IT.")
    text = "Managed by policy: channel beta. Updates are managed by Example IT."
    feed.publish("1.1.0", channel="stable")
    feed.publish("1.2.0", channel="beta")
    window, controller = started(qtbot, shell)
    assert window.policy_label.isVisible() and text in window.policy_label.toolTip()
    dialog = window.show_settings()
    qtbot.waitExposed(dialog)
    assert dialog.policy.isVisible() and dialog.policy.text() == text
    assert not dialog.channel.isEnabled() and dialog.channel.currentData() == "beta"
    assert dialog.channel.toolTip() == "Set by your administrator"
    qtbot.mouseClick(dialog.channel, Qt.MouseButton.LeftButton)  # a locked selector opens nothing
    assert QApplication.activePopupWidget() is None
    settings_file = tmp_path / "data" / "settings.json"
    qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok),
                     Qt.MouseButton.LeftButton)
    qtbot.waitUntil(settings_file.exists, timeout=WAIT_MS)
    assert json.loads(settings_file.read_text())["channel"] == "stable", "the user's own choice is kept"
    assert controller.config.channel == "beta"
    updates = window.show_updates()
    assert updates.policy.isVisible() and updates.policy.text() == text
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.STAGED and str(controller.view.release.version) == "1.2.0"


def test_runtime_updates_turned_off_by_policy_say_so_and_offer_no_check(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                       server: LoopbackServer, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    policy(tmp_path, monkeypatch, runtime_updates=False)
    feed.publish("1.1.0")
    server.clear_requests()
    window, controller = started(qtbot, shell)
    assert window.update_label.full_text() == "Updates are turned off by your administrator"
    assert not window.check_action.isEnabled()
    dialog = window.show_updates()
    assert dialog.state.text() == "Updates are turned off by your administrator"
    assert not dialog.check_button.isEnabled()
    assert dialog.policy.text() == "Managed by policy: runtime updates are turned off"
    qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    window.check_action.trigger()
    assert controller.check_now(manual=False) is False, "the scheduled check has nothing to do either"
    assert not controller.busy and server.requests == []
    settings = window.settings_dialog()
    assert not settings.auto_update.isEnabled() and not settings.interval.isEnabled()
    assert not settings.channel.isEnabled()
    settings.close()
    assert not (tmp_path / "data" / "versions").exists()


def test_with_runtime_updates_off_the_app_still_updates_itself(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                               launcher: InstallRoot, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    policy(tmp_path, monkeypatch, runtime_updates=False)
    feed.publish("1.1.0")
    publish_app(feed, tmp_path, "1.1.0")
    window, controller = started(qtbot, shell)
    qtbot.waitUntil(lambda: controller.app.updatable, timeout=WAIT_MS)
    assert window.check_action.isEnabled(), "a check still brings the app's own update"
    check(qtbot, window, controller)
    assert window.update_label.full_text() == "Updates are turned off by your administrator"
    assert not (tmp_path / "data" / "versions" / "1.1.0").exists(), "no runtime was downloaded"
    qtbot.waitUntil(lambda: window.banner.button("restart-app") is not None, timeout=WAIT_MS)


def test_an_app_updated_by_the_package_manager_says_so(qtbot: QtBot, shell: MakeShell, install: InstallRoot,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the .deb ships beside the executable (installer/build.py), here through the environment layer.
    policy(tmp_path, monkeypatch, shell_updates=False, message=PACKAGE_MESSAGE)
    window, controller = started(qtbot, shell)
    qtbot.waitUntil(lambda: controller.app.info is not None, timeout=WAIT_MS)
    assert controller.app.info.updates is ShellUpdates.MANAGED  # type: ignore[union-attr]
    settings = window.settings_dialog()
    assert settings.app_updates.text() == PACKAGE_MESSAGE
    assert settings.policy.text() == f"Managed by policy: the app's own updates are turned off. {PACKAGE_MESSAGE}"
    assert settings.auto_update.isEnabled(), "runtime updates are still the user's to set"
    settings.close()
    assert window.show_updates().app.status.text() == PACKAGE_MESSAGE
    window.show_about()
    assert f"App updates: {PACKAGE_MESSAGE}" in window.about_text()
    assert window.update_label.full_text() != "Updates are turned off by your administrator"


def test_a_policy_without_its_own_words_says_the_administrator_turned_app_updates_off(
        qtbot: QtBot, shell: MakeShell, install: InstallRoot, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    policy(tmp_path, monkeypatch, shell_updates=False)
    window, controller = started(qtbot, shell)
    dialog = window.show_updates()
    qtbot.waitUntil(lambda: dialog.app.status.text() == "The app's own updates are turned off by your administrator.",
                    timeout=WAIT_MS)


# -- app versions that failed to start ------------------------------------------------------------------

def test_app_versions_that_failed_to_start_are_listed_and_allowed_again(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                       install: InstallRoot,
                                                                       tmp_path: Path) -> None:
    BadVersions(install.bad_file).mark(Version("1.1.0"), "exited with code 255 before it was ready", 255,
                                       ("Traceback (most recent call last):", "ImportError: libfoo.so.1"))
    BadVersions(install.bad_file).mark(Version("1.0.5"), "no health mark within 60 s")
    publish_app(feed, tmp_path, "1.1.0")
    window, controller = started(qtbot, shell)
    dialog = window.show_updates()
    section = dialog.app
    qtbot.waitUntil(lambda: section.bad.topLevelItemCount() == 2, timeout=WAIT_MS)
    assert section.bad_box.isVisible()
    rows = [(section.bad.topLevelItem(i).text(0), section.bad.topLevelItem(i).text(1)) for i in range(2)]
    assert rows == [("1.1.0", "didn't start (exited with code 255 before it was ready)"),
                    ("1.0.5", "didn't start (no health mark within 60 s)")]
    assert "ImportError: libfoo.so.1" in section.bad.topLevelItem(0).toolTip(1)
    assert not section.allow_button.isEnabled(), "nothing selected yet"
    section.bad.topLevelItem(0).setSelected(True)
    with qtbot.waitSignal(controller.app_allowed, timeout=WAIT_MS) as allowed:
        qtbot.mouseClick(section.allow_button, Qt.MouseButton.LeftButton)
    assert allowed.args == [("1.1.0",)]
    qtbot.waitUntil(lambda: section.bad.topLevelItemCount() == 1, timeout=WAIT_MS)
    assert section.bad.topLevelItem(0).text(0) == "1.0.5"
    assert sorted(str(v) for v in BadVersions(install.bad_file).load().entries) == ["1.0.5"]
    check(qtbot, window, controller)
    qtbot.waitUntil(lambda: controller.app.pending == Version("1.1.0"), timeout=WAIT_MS)
    section.bad.topLevelItem(0).setSelected(True)
    with qtbot.waitSignal(controller.app_allowed, timeout=WAIT_MS):
        qtbot.mouseClick(section.allow_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not section.bad_box.isVisible(), timeout=WAIT_MS)
