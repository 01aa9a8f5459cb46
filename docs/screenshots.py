"""Take the README's screenshots from the app itself (QWidget.grab), offscreen, light and dark.

    .venv/bin/python docs/screenshots.py [--only light|dark]

Walks the demo cycle against the demo's own throttled feed (desktop.demo.DemoFeed): the bundled
runtime running with a note, the update downloading (size, speed, time left), the update ready
(Restart to update), the new version running (What's new), its release notes, a crashing
version marked bad with the fallback running, and the Updates panel. Dark pictures are taken
with a dark palette and the dark colour scheme (the runtime's page follows it) and have `-dark`
in their names.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.pop("DESKTOP_NO_WEBVIEW", None)
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

import httpx  # noqa: E402
import PySide6.QtWebEngineWidgets  # noqa: E402,F401  (must load before the QApplication)
from PySide6.QtCore import QCoreApplication, QEvent, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QColor, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from desktop.core.results import UpdateState  # noqa: E402
from desktop.core.shell import Shell  # noqa: E402
from desktop.demo import DemoFeed  # noqa: E402
from desktop.ui.app import page_follows_color_scheme  # noqa: E402
from desktop.ui.controller import ShellController  # noqa: E402
from desktop.ui.window import MainWindow  # noqa: E402

OUT = REPO / "docs" / "screenshots"
NOTE = "Call the plumber about the kitchen tap\nand buy a new washer on the way."
DARK = {
    QPalette.ColorRole.Window: "#202124", QPalette.ColorRole.WindowText: "#e8eaed",
    QPalette.ColorRole.Base: "#17181a", QPalette.ColorRole.AlternateBase: "#26272b",
    QPalette.ColorRole.Text: "#e8eaed", QPalette.ColorRole.Button: "#2d2e31",
    QPalette.ColorRole.ButtonText: "#e8eaed", QPalette.ColorRole.Highlight: "#8ab4f8",
    QPalette.ColorRole.HighlightedText: "#202124", QPalette.ColorRole.ToolTipBase: "#2d2e31",
    QPalette.ColorRole.ToolTipText: "#e8eaed", QPalette.ColorRole.PlaceholderText: "#9aa0a6",
    QPalette.ColorRole.Link: "#8ab4f8", QPalette.ColorRole.Light: "#3c4043",
    QPalette.ColorRole.Midlight: "#303134", QPalette.ColorRole.Mid: "#5f6368",
    QPalette.ColorRole.Dark: "#111214", QPalette.ColorRole.Shadow: "#000000",
}


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


def use_theme(app: QApplication, theme: str) -> None:
    if theme == "dark":
        palette = QPalette()
        for role, color in DARK.items():
            palette.setColor(role, QColor(color))
        for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7f8389"))
        app.setPalette(palette)
        app.styleHints().setColorScheme(Qt.ColorScheme.Dark)
    else:
        app.setPalette(app.style().standardPalette())
        app.styleHints().setColorScheme(Qt.ColorScheme.Light)


def add_note(controller: ShellController) -> None:
    """A note in the runtime, as the user would have typed it (the page's own API, with the token)."""
    running = controller.running
    assert running is not None and running.url
    with httpx.Client(trust_env=False, timeout=10) as client:
        client.post(running.url + "api/notes", json={"text": NOTE},
                    headers={"X-Desktop-Token": running.token}).raise_for_status()


def page_loaded(window: MainWindow, version: str) -> Callable[[], bool]:
    """The page of `version`'s runtime is shown (not the previous runtime's)."""
    loaded: list[bool] = []

    def done() -> bool:
        view = window.web
        running = window.controller.running
        if view is None or running is None or str(running.version) != version or not running.url:
            return False
        if not loaded:
            view.loadFinished.connect(lambda ok: loaded.append(bool(ok)))
        return (window.stack.currentWidget() is view and view.url().port() == QUrl(running.url).port()
                and "Notes" in view.title() and bool(loaded))
    return done


def run(app: QApplication, theme: str) -> None:
    suffix = "-dark" if theme == "dark" else ""

    def shot(widget: QWidget, name: str) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{name}{suffix}.png"
        widget.grab().save(str(path))
        print(f"saved {path.relative_to(REPO)}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        feed = DemoFeed(work / "publisher").start()
        try:
            feed.publish_good()
            shell = Shell.open(data_dir=work / "data", registry=feed.url, registry_kind="feed",
                               public_key=feed.public_key)
            controller = ShellController(shell, initial_delay_s=3600)
            window = MainWindow(controller)
            window.resize(1100, 720)
            window.show()
            controller.start()
            wait(app, lambda: controller.running is not None)
            add_note(controller)
            window.reload_page()
            wait(app, page_loaded(window, "1.0.0"))
            settle(app, 2.0)
            shot(window, "1-bundled-running")

            window.check_now()
            wait(app, lambda: controller.view.state is UpdateState.DOWNLOADING and controller.view.transfer is not None
                 and controller.view.transfer.eta is not None and (controller.view.transfer.percent or 0) >= 40)
            shot(window, "2-downloading")
            wait(app, lambda: controller.view.state is UpdateState.STAGED)
            settle(app, 0.5)
            shot(window, "3-staged-restart-to-update")

            restart = window.banner.button("restart-to-update")
            assert restart is not None
            restart.click()
            wait(app, lambda: window.banner.notice is not None and window.banner.notice.key == "whats-new:1.1.0")
            wait(app, page_loaded(window, "1.1.0"))
            settle(app, 2.0)
            shot(window, "4-new-version-running")
            notes = window.show_whats_new()
            notes.resize(560, 360)
            settle(app, 0.5)
            shot(notes, "4b-whats-new")
            notes.close()

            feed.publish_crashing()
            window.check_now()
            wait(app, lambda: controller.view.state is UpdateState.STAGED)
            restart = window.banner.button("restart-to-update")
            assert restart is not None
            restart.click()
            wait(app, lambda: window.banner.notice is not None and window.banner.notice.key == "start-failed:1.2.0")
            wait(app, page_loaded(window, "1.1.0"))
            settle(app, 2.0)
            shot(window, "5-crash-marked-bad-fallback")

            dialog = window.show_updates()
            dialog.resize(680, 460)
            wait(app, lambda: dialog.blocked.topLevelItemCount() == 1)
            settle(app, 0.5)
            shot(dialog, "6-update-panel")
            dialog.close()
            window.request_quit()
            wait(app, lambda: controller.supervisor.state.value == "stopped")
            settle(app, 0.3)
            # The page must go before its profile, and both before the application.
            window.deleteLater()
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
            settle(app, 0.3)
        finally:
            feed.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("light", "dark"))
    args = parser.parse_args()
    if args.only is None:
        # Chromium fixes the page's colour scheme when it starts: one process per theme.
        for theme in ("light", "dark"):
            subprocess.run([sys.executable, __file__, "--only", theme], check=True)
        return 0
    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    use_theme(app, args.only)
    page_follows_color_scheme(app)
    run(app, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
