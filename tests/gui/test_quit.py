"""Instant quit and a responsive window: a stalled registry never holds the GUI thread or the exit.

The heartbeat is a 10 ms QTimer on the GUI thread; its longest late tick is the longest time the
GUI thread was busy. Issue 10 asks for no stall over 1 s; the goal is 100 ms.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.core.failures import FailureMemory
from desktop.core.state import read_json_object
from tests.gui.conftest import WAIT_MS, Heartbeat, MakeShell, started
from tests.support.feed import Feed
from tests.support.server import LoopbackServer
from tests.support.shells import wait_dead

REPO = Path(__file__).resolve().parents[2]
MAX_STALL_S = 1.0
STALLED = "/feed/metadata/timestamp.json"


def test_window_stays_responsive_while_a_check_is_stuck(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                        server: LoopbackServer) -> None:
    feed.publish("1.1.0")
    window, controller = started(qtbot, shell)
    server.fault(STALLED, "stall", seconds=60)
    with Heartbeat() as beat:
        window.check_now()
        qtbot.waitUntil(lambda: server.stalled >= 1, timeout=WAIT_MS)
        dialog = window.show_updates()  # the user goes on using the window
        settings = window.show_settings()
        settings.reject()
        qtbot.wait(1200)
        assert controller.busy and "Checking" in window.update_label.full_text()
        dialog.close()
    print(f"\nlongest GUI-thread stall during a stuck check: {beat.longest_stall * 1000:.0f} ms")
    assert beat.longest_stall < MAX_STALL_S
    assert len(beat.ticks) > 50


def test_quit_during_a_stuck_check_is_instant(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                              server: LoopbackServer) -> None:
    """Item 3: quitting does not wait for the registry, and never on the GUI thread."""
    feed.publish("1.1.0")
    window, controller = started(qtbot, shell)
    pid = controller.running.pid if controller.running else 0
    server.fault(STALLED, "stall", seconds=60)
    window.check_now()
    qtbot.waitUntil(lambda: server.stalled >= 1, timeout=WAIT_MS)
    with Heartbeat() as beat:
        started_at = time.monotonic()
        with qtbot.waitSignal(window.quit_requested, timeout=WAIT_MS):
            window.request_quit()
            assert not window.isVisible(), "the window goes away at once"
        quit_s = time.monotonic() - started_at
    print(f"\nquit with a stalled registry: {quit_s:.2f} s to a stopped runtime; "
          f"longest GUI-thread stall {beat.longest_stall * 1000:.0f} ms")
    assert beat.longest_stall < MAX_STALL_S
    assert server.stalled >= 1, "the registry is still stalled: quitting did not wait for it"
    assert wait_dead(pid, 5), "the runtime is stopped"


def test_quit_during_download_leaves_no_partial_version_and_no_process(
        qtbot: QtBot, shell: MakeShell, feed: Feed, server: LoopbackServer, tmp_path: Path) -> None:
    feed.publish("1.1.0", extra_files={"data/blob.bin": os.urandom(400_000)})
    target = feed.target_file("notes-runtime-1.1.0").name
    server.fault(f"/feed/targets/{target}", "slow", chunk=16 * 1024, delay=0.05)
    window, controller = started(qtbot, shell)
    pid = controller.running.pid if controller.running else 0
    window.check_now()
    qtbot.waitUntil(lambda: controller.view.transfer is not None, timeout=WAIT_MS)
    with qtbot.waitSignal(window.quit_requested, timeout=WAIT_MS):
        window.request_quit()
    data = tmp_path / "data"
    versions = data / "versions"
    assert not [p for p in versions.iterdir() if "partial" in p.name] if versions.exists() else True
    assert FailureMemory(data / "failures.json").pinned() == {}
    assert FailureMemory(data / "failures.json").transient() is None
    assert wait_dead(pid, 5)


def test_the_app_exits_at_once_on_sigterm_with_a_stalled_registry(feed: Feed, server: LoopbackServer,
                                                                  tmp_path: Path) -> None:
    """The real app: SIGTERM during a check stuck on the registry; the process is gone long before
    the registry answers (the stall lasts a minute)."""
    feed.publish("1.1.0")
    server.fault(STALLED, "stall", seconds=60)
    data = tmp_path / "data"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DESKTOP_NO_WEBVIEW": "1"}
    app = subprocess.Popen([sys.executable, "-m", "desktop", "run", "--data-dir", str(data), "--registry", feed.url,
                            "--registry-kind", "feed", "--public-key", feed.key.public],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert server.wait_for_stalled(1, timeout=60), "the app's first check reached the registry"
        [lease] = [read_json_object(p) for p in (data / "running").glob("*.json")]
        assert lease is not None and lease["state"] == "running"
        runtime = int(lease["group"])
        app.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = app.communicate(timeout=30)
        quit_s = time.monotonic() - sent
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate(timeout=10)
    print(f"\nthe app exited {quit_s:.2f} s after SIGTERM, with the registry stalled")
    assert app.returncode == 0, err
    assert server.stalled >= 1, "it did not wait for the registry"
    assert wait_dead(runtime, 5), "the runtime went with it"
