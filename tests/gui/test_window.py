"""The shell window with pytest-qt: real runtime processes, a real local feed, offscreen."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from pytestqt.qtbot import QtBot

from desktop.core.config import Settings, load_config
from desktop.core.failures import FailureMemory
from desktop.core.state import read_json_object
from desktop.ui.controller import ShellController
from desktop.ui.single_instance import SingleInstance
from desktop.ui.window import MainWindow
from tests.gui.conftest import running_label
from tests.support.feed import Feed
from tests.support.server import LoopbackServer

Shell = Callable[..., tuple[MainWindow, ShellController]]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def wait_running(qtbot: QtBot, window: MainWindow, version: str, source: str, timeout: int = 30_000) -> None:
    qtbot.waitUntil(lambda: f"Running {version} ({source})" in running_label(window), timeout=timeout)


def test_window_shows_bundled_runtime_running(qtbot: QtBot, shell: Shell) -> None:
    window, controller = shell()
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    assert window.stack.currentWidget() is window.panel_page
    assert window.url_label.text().count("http://127.0.0.1:") == 2
    assert window.runtime_label.property("state") == "running"
    assert "1.0.0 (bundled)" in window.about_text()


def test_update_found_downloaded_and_applied_by_restart(qtbot: QtBot, shell: Shell, feed: Feed) -> None:
    feed.publish("1.1.0")
    window, controller = shell()
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    progress: list[int] = []
    controller.progress_changed.connect(progress.append)
    dialog = window.show_updates()
    assert not dialog.restart_button.isEnabled()
    with qtbot.waitSignal(controller.check_finished, timeout=30_000):
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    assert controller.update_kind == "staged"
    assert "restart to update" in window.update_label.text()
    assert any(0 < p <= 100 for p in progress) and progress[-1] == 100
    assert dialog.available.text() == "1.1.0 — staged" and "notes for 1.1.0" in dialog.notes.toPlainText()
    assert dialog.restart_button.isEnabled() and window.banner.isVisible()
    qtbot.mouseClick(dialog.restart_button, Qt.MouseButton.LeftButton)
    wait_running(qtbot, window, "1.1.0", "staged")
    assert controller.update_kind == "up-to-date"


def test_crash_of_new_version_is_shown_and_fallback_runs(qtbot: QtBot, shell: Shell, feed: Feed) -> None:
    feed.publish("1.1.0")
    window, controller = shell()
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    with qtbot.waitSignal(controller.check_finished, timeout=30_000):
        controller.check_now()
    controller.restart_to_update()
    wait_running(qtbot, window, "1.1.0", "staged")
    feed.publish("1.2.0", simulate="crash-at-start")
    with qtbot.waitSignal(controller.check_finished, timeout=30_000):
        controller.check_now()
    assert controller.staged is not None and controller.staged["version"] == "1.2.0"
    with qtbot.waitSignal(controller.notification, timeout=30_000) as blocker:
        window._restart_to_update()
    title, message = blocker.args
    assert "1.2.0" in title and "marked bad" in message and "1.1.0" in message
    wait_running(qtbot, window, "1.1.0", "staged")
    assert window.banner.isVisible() and "crashed at startup" in window.banner_text.text()
    dialog = window.show_updates()
    rows = [dialog.bad.topLevelItem(i).text(0) for i in range(dialog.bad.topLevelItemCount())]
    assert rows == ["1.2.0"]
    dialog.bad.topLevelItem(0).setSelected(True)
    qtbot.mouseClick(dialog.clear_button, Qt.MouseButton.LeftButton)
    assert dialog.bad.topLevelItemCount() == 0


def test_settings_change_channel_persist_and_trigger_check(qtbot: QtBot, shell: Shell, feed: Feed,
                                                           server: LoopbackServer, tmp_path: Path) -> None:
    feed.publish("1.1.0", channel="stable")
    feed.publish("1.2.0", channel="beta")
    window, controller = shell()
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    dialog = window.settings_dialog()
    dialog.channel.setCurrentText("beta")
    dialog.interval.setValue(90)
    server.clear_requests()
    with qtbot.waitSignal(controller.check_finished, timeout=30_000):
        controller.apply_settings(dialog.result_settings())
    assert server.requests, "changing the channel triggered a check"
    assert controller.staged is not None and controller.staged["version"] == "1.2.0"
    saved = read_json_object(tmp_path / "data" / "settings.json")
    assert saved is not None and saved["channel"] == "beta" and saved["check_interval_s"] == 5400
    reloaded = load_config(data_dir=tmp_path / "data")
    assert reloaded.channel == "beta" and reloaded.settings == Settings(
        channel="beta", auto_update=True, check_interval_s=5400.0, close_to_tray=False)


def test_stalled_registry_leaves_gui_responsive(qtbot: QtBot, shell: Shell, feed: Feed,
                                                server: LoopbackServer) -> None:
    feed.publish("1.1.0")
    window, controller = shell()
    server.fault("/feed/metadata/timestamp.json", "stall", seconds=8)
    server.fault("/feed/metadata/1.root.json", "stall", seconds=8)
    ticks: list[float] = []
    probe = QTimer()
    probe.timeout.connect(lambda: ticks.append(time.monotonic()))
    probe.start(20)
    controller.check_now()
    assert controller.checking and "Checking" in window.update_label.text()
    qtbot.wait(2000)
    probe.stop()
    assert controller.checking, "the check is still stalled"
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) >= 50 and max(gaps) < 0.5, "the event loop kept ticking"
    qtbot.mouseClick(window.show_updates().check_button, Qt.MouseButton.LeftButton)  # still clickable


def test_offline_first_run_shows_bundled_and_will_retry(qtbot: QtBot, shell: Shell, feed: Feed,
                                                        tmp_path: Path) -> None:
    config = feed.config(tmp_path / "data").with_overrides(registry_url="http://127.0.0.1:9/feed")
    window, controller = shell(config)
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    with qtbot.waitSignal(controller.check_finished, timeout=30_000):
        controller.check_now()
    assert controller.update_kind == "offline" and "will retry" in window.update_label.text()
    assert controller.check_timer.isActive(), "a retry is scheduled"
    assert controller.check_timer.remainingTime() <= 6 * 3600 * 1000


def test_quit_during_download_leaves_no_partial_and_no_process(qtbot: QtBot, shell: Shell, feed: Feed,
                                                               server: LoopbackServer, tmp_path: Path) -> None:
    feed.publish("1.1.0", extra_files={f"data/blob{i}.bin": bytes(range(256)) * 4000 for i in range(4)})
    target = next(p.name for p in (feed.root / "targets").iterdir() if "notes-runtime-1.1.0" in p.name)
    server.fault(f"/feed/targets/{target}", "slow", chunk=16 * 1024, delay=0.05)
    window, controller = shell()
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    runtime_pid = controller.supervisor.running.pid if controller.supervisor.running else 0
    with qtbot.waitSignal(controller.progress_changed, timeout=30_000, check_params_cb=lambda p: 0 < p < 100):
        controller.check_now()
    window.request_quit()
    assert not window.isVisible()
    data = tmp_path / "data"
    assert not [p for p in (data / "versions").iterdir()] if (data / "versions").exists() else True
    assert FailureMemory(data / "failures.json").pinned() == {}
    assert FailureMemory(data / "failures.json").transient() is None
    assert subprocess.run(["kill", "-0", str(runtime_pid)], capture_output=True).returncode != 0


def test_second_start_activates_the_first(qtbot: QtBot, tmp_path: Path) -> None:
    data = tmp_path / "data"
    primary = SingleInstance(data)
    assert primary.acquire()
    try:
        with qtbot.waitSignal(primary.activated, timeout=20_000):
            second = subprocess.Popen([sys.executable, "-m", "desktop", "run", "--data-dir", str(data)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 0 and "already running" in err
    finally:
        primary.release()


@pytest.mark.parametrize("name", ["window"])
def test_runtime_page_in_web_view(qtbot: QtBot, shell: Shell, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv("DESKTOP_NO_WEBVIEW")
    from desktop.ui.webview import prepare_webengine, webengine_available

    if not webengine_available():
        pytest.skip("QtWebEngine is not installed")
    prepare_webengine()
    window, controller = shell()
    assert window.web is not None
    controller.start()
    wait_running(qtbot, window, "1.0.0", "bundled")
    assert window.stack.currentWidget() is window.web
    with qtbot.waitSignal(window.web.loadFinished, timeout=30_000, raising=False):
        pass
    qtbot.waitUntil(lambda: "Notes" in window.web.title(), timeout=30_000)  # type: ignore[attr-defined]
    assert window.web.url().toString().startswith("http://127.0.0.1:")  # type: ignore[attr-defined]


def test_bundled_runtime_failure_shows_error_tail_and_retry(qtbot: QtBot, shell: Shell, feed: Feed,
                                                           tmp_path: Path) -> None:
    from desktop.devtools import resources_with_broken_bundle

    config = feed.config(tmp_path / "data")
    resources = resources_with_broken_bundle(config.resources, tmp_path / "resources", "crash-at-start")
    window, controller = shell(config.with_overrides(resources=resources))
    failures: list[str] = []
    controller.runtime_changed.connect(lambda state, info: failures.append(state) if state == "failed" else None)
    controller.start()
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.failed_page, timeout=30_000)
    assert "bundled runtime 1.0.0 failed to start" in window.error_title.text()
    assert "simulated crash at start" in window.error_log.toPlainText()
    assert window.retry_button.isVisible()
    qtbot.mouseClick(window.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(failures) == 2, timeout=30_000)
    assert window.stack.currentWidget() is window.failed_page, "no loop: it stays failed until asked again"
    qtbot.wait(500)
    assert len(failures) == 2
