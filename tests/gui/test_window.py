"""The shell window with pytest-qt: real runtime processes, a real local feed, offscreen."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from desktop.core.config import Settings, load_config
from desktop.core.results import UpdateState
from desktop.core.state import read_json_object
from desktop.devtools import resources_with_broken_bundle
from tests.gui.conftest import WAIT_MS, MakeShell, check, running_label, started, wait_running
from tests.support.feed import Feed
from tests.support.server import LoopbackServer


def test_window_shows_bundled_runtime_running(qtbot: QtBot, shell: MakeShell) -> None:
    window, controller = started(qtbot, shell)
    assert window.stack.currentWidget() is window.panel_page
    assert window.url_label.text().startswith("http://127.0.0.1:")
    assert window.runtime_label.property("state") == "running"
    assert running_label(window) == "Running 1.0.0 (built in)"
    box = window.show_about()
    assert "1.0.0 (built in)" in window.about_text()
    box.close()


def test_update_found_downloaded_and_applied_by_restart(qtbot: QtBot, shell: MakeShell, feed: Feed) -> None:
    feed.publish("1.1.0")
    window, controller = started(qtbot, shell)
    views = []
    controller.update_changed.connect(views.append)
    dialog = window.show_updates()
    assert not dialog.primary_button.isVisible()
    with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    assert controller.view.state is UpdateState.STAGED
    assert "1.1.0 is ready — restart to update" in window.update_label.full_text()
    assert [v.state for v in views][:1] == [UpdateState.CHECKING]
    assert any(v.state is UpdateState.DOWNLOADING and v.transfer is not None for v in views)
    assert dialog.primary_button.isVisible() and dialog.primary_button.text() == "Restart to update"
    assert "notes for 1.1.0" in dialog.notes.toPlainText()
    assert window.banner.isVisible() and window.banner.button("restart-to-update") is not None
    qtbot.mouseClick(dialog.primary_button, Qt.MouseButton.LeftButton)
    wait_running(qtbot, window, "1.1.0")
    assert running_label(window) == "Running 1.1.0 (installed update)"
    assert controller.view.state is UpdateState.UP_TO_DATE


def test_crash_of_new_version_is_shown_and_fallback_runs(qtbot: QtBot, shell: MakeShell, feed: Feed) -> None:
    feed.publish("1.1.0", simulate="crash-at-start")
    window, controller = started(qtbot, shell)
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.STAGED
    window.banner.button("restart-to-update").click()
    qtbot.waitUntil(lambda: window.banner.notice is not None and window.banner.notice.key == "start-failed:1.1.0",
                    timeout=WAIT_MS)
    wait_running(qtbot, window, "1.0.0")
    notice = window.banner.notice
    assert notice.title == "Version 1.1.0 couldn't start."
    assert "1.0.0 (built in) is running instead" in notice.text and "won't be installed again" in notice.text
    dialog = window.show_updates()
    qtbot.waitUntil(lambda: dialog.blocked.topLevelItemCount() == 1, timeout=WAIT_MS)
    item = dialog.blocked.topLevelItem(0)
    assert item.text(0) == "1.1.0" and item.text(1).startswith("didn't start")
    item.setSelected(True)
    qtbot.mouseClick(dialog.allow_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.blocked.topLevelItemCount() == 0, timeout=WAIT_MS)


def test_settings_change_channel_persist_and_trigger_check(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                           server: LoopbackServer, tmp_path: Path) -> None:
    feed.publish("1.1.0", channel="stable")
    feed.publish("1.2.0", channel="beta")
    window, controller = started(qtbot, shell)
    dialog = window.settings_dialog()
    assert not dialog.channel.isEditable(), "a channel is picked, not typed"
    dialog.channel.setCurrentIndex(dialog.channel.findData("beta"))
    dialog.interval.setValue(90)
    server.clear_requests()
    with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
        controller.apply_settings(dialog.result_settings())
    assert server.requests, "changing the channel triggered a check"
    assert controller.view.state is UpdateState.STAGED and str(controller.view.release.version) == "1.2.0"
    saved = read_json_object(tmp_path / "data" / "settings.json")
    assert saved is not None and saved["channel"] == "beta" and saved["check_interval_s"] == 5400
    reloaded = load_config(data_dir=tmp_path / "data")
    assert reloaded.channel == "beta" and reloaded.settings == Settings(
        channel="beta", auto_update=True, check_interval_s=5400.0, close_to_tray=False)


def test_settings_keep_a_channel_set_elsewhere(qtbot: QtBot, shell: MakeShell) -> None:
    window, _controller = shell()
    dialog = window.settings_dialog()
    dialog.original = Settings(channel="nightly")
    from desktop.ui.dialogs import SettingsDialog

    custom = SettingsDialog(Settings(channel="nightly"), False, window)
    assert custom.channel.currentData() == "nightly" and not custom.channel.isEditable()
    assert custom.result_settings().channel == "nightly"


def test_bundled_runtime_failure_shows_error_tail_and_retry(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                           tmp_path: Path) -> None:
    config = feed.config(tmp_path / "data")
    resources = resources_with_broken_bundle(config.resources, tmp_path / "resources", "crash-at-start")
    window, controller = shell(config.with_overrides(resources=resources))
    failures: list[object] = []
    controller.runtime_event.connect(lambda event: failures.append(event) if event.state.value == "failed" else None)
    controller.start()
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.failed_page, timeout=WAIT_MS)
    assert window.error_title.text() == "The runtime couldn't start."
    assert "bundled runtime 1.0.0 failed to start" in window.error_reason.text()
    assert "simulated crash at start" in window.error_log.toPlainText()
    assert window.retry_button.isVisible()
    qtbot.mouseClick(window.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(failures) == 2, timeout=WAIT_MS)
    assert window.stack.currentWidget() is window.failed_page, "no loop: it stays failed until asked again"


def test_runtime_text_is_shown_as_text_never_as_markup(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                      tmp_path: Path) -> None:
    """Issue 12: whatever a runtime prints is neutralised wherever the window shows it."""
    hostile = ('<img src="file:///etc/hostname"><a href="https://evil.example/">click</a>'
               '<b>bold</b>\x1b[31mred\x1b[0m\rforged')
    main = ("import sys\n"
            f"sys.stderr.write({hostile!r} + '\\n')\n"
            "sys.stderr.flush()\n"
            "sys.exit(3)\n").encode()
    config = feed.config(tmp_path / "data")
    resources = tmp_path / "resources"
    shutil.copytree(config.resources, resources, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (resources / "runtime" / "app" / "main.py").write_bytes(main)
    window, controller = shell(config.with_overrides(resources=resources))
    controller.start()
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.failed_page, timeout=WAIT_MS)
    shown = window.error_log.toPlainText()
    assert '<img src="file:///etc/hostname">' in shown, "shown literally, as plain text"
    assert "\x1b" not in shown and "\r" not in shown
    for label in (window.error_title, window.error_reason, window.starting_label, window.url_label):
        assert label.textFormat() == Qt.TextFormat.PlainText


def test_a_crashing_versions_output_is_escaped_in_the_banner_and_the_panel(qtbot: QtBot, shell: MakeShell,
                                                                         feed: Feed) -> None:
    hostile = '<img src="file:///etc/hostname"><a href="https://evil.example/">click</a>'
    main = f"import sys\nsys.stderr.write({hostile!r} + '\\n')\nsys.exit(5)\n".encode()
    feed.publish("1.1.0", extra_files={"app/main.py": main})
    window, controller = started(qtbot, shell)
    check(qtbot, window, controller)
    window.banner.button("restart-to-update").click()
    qtbot.waitUntil(lambda: window.banner.notice is not None and window.banner.notice.key == "start-failed:1.1.0",
                    timeout=WAIT_MS)
    assert "<img" not in window.banner.text.text() and "<a " not in window.banner.text.text()
    dialog = window.show_updates()
    qtbot.waitUntil(lambda: dialog.blocked.topLevelItemCount() == 1, timeout=WAIT_MS)
    tip = dialog.blocked.topLevelItem(0).toolTip(1)
    assert "&lt;img src=\"file:///etc/hostname\"&gt;" in tip and "<img" not in tip
    box = window.show_about()
    assert box.textFormat() == Qt.TextFormat.PlainText
