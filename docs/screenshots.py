"""Take the README's screenshots from the app itself (QWidget.grab), offscreen.

    .venv/bin/python docs/screenshots.py

Walks the demo cycle against a local feed: bundled runtime running, update downloading,
update staged, new version running, a crashing version marked bad with the fallback running,
and the update panel.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

import PySide6.QtWebEngineWidgets  # noqa: E402,F401  (must load before the QApplication)
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from desktop.ui.controller import ShellController  # noqa: E402
from desktop.ui.window import MainWindow  # noqa: E402
from tests.support.feed import Feed  # noqa: E402
from tests.support.server import LoopbackServer  # noqa: E402

OUT = REPO / "docs" / "screenshots"


def wait(app: QApplication, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not reach the expected state")
        app.processEvents()
        time.sleep(0.02)


def settle(app: QApplication, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


def shot(widget: QWidget, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(OUT / name))
    print(f"saved docs/screenshots/{name}")


def main() -> int:
    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp, LoopbackServer() as server:
        work = Path(tmp)
        feed = Feed(work / "feed", server, work / "work")
        feed.publish("1.1.0", extra_files={f"assets/blob{i}.bin": os.urandom(400_000) for i in range(6)})
        target = next(p.name for p in (feed.root / "targets").iterdir() if "notes-runtime-1.1.0" in p.name)
        server.fault(f"/feed/targets/{target}", "slow", chunk=64 * 1024, delay=0.08)
        controller = ShellController(feed.config(work / "data"), initial_delay_s=3600)
        window = MainWindow(controller)
        window.resize(1100, 720)
        window.show()
        controller.start()
        label = window.runtime_label.text
        wait(app, lambda: "Running 1.0.0 (bundled)" in label())
        settle(app, 2.0)
        shot(window, "1-bundled-running.png")

        controller.check_now(manual=True)
        wait(app, lambda: controller.update_kind == "downloading" and window.progress.value() >= 35)
        shot(window, "2-downloading.png")
        wait(app, lambda: controller.update_kind == "staged")
        settle(app, 0.5)
        shot(window, "3-staged-restart-to-update.png")

        window._restart_to_update()
        wait(app, lambda: "Running 1.1.0 (staged)" in label())
        settle(app, 2.0)
        shot(window, "4-new-version-running.png")

        feed.publish("1.2.0", simulate="crash-at-start")
        controller.check_now(manual=True)
        wait(app, lambda: controller.update_kind == "staged")
        window._restart_to_update()
        wait(app, lambda: window.banner.isVisible() and "crashed" in window.banner_text.text())
        wait(app, lambda: "Running 1.1.0 (staged)" in label())
        settle(app, 2.0)
        shot(window, "5-crash-marked-bad-fallback.png")

        dialog = window.show_updates()
        dialog.resize(640, 520)
        settle(app, 0.5)
        shot(dialog, "6-update-panel.png")
        window.request_quit()
        settle(app, 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
