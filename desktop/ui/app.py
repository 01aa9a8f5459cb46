"""Start the GUI: single instance, window, controller, and (for `desktop demo`) a local feed."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from desktop.core.config import AppConfig
from desktop.core.logfile import log_to_file
from desktop.demo import GOOD_VERSION, DemoFeed
from desktop.ui.controller import ShellController
from desktop.ui.single_instance import SingleInstance
from desktop.ui.webview import prepare_webengine, webengine_available
from desktop.ui.window import MainWindow

log = logging.getLogger(__name__)


def app_icon(config: AppConfig) -> QIcon:
    return QIcon(str(config.resources / "icons" / "desktop.svg"))


def run_gui(config: AppConfig, *, demo: DemoFeed | None = None, initial_delay_s: float = 5.0,
            screenshot: Path | None = None, exit_after_s: float | None = None) -> int:
    """Run the shell until the user quits; returns the process exit code."""
    if webengine_available():
        prepare_webengine()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Desktop Shell")
    app.setDesktopFileName("desktop-shell")  # Wayland app id: matches installer's desktop-shell.desktop
    app.setQuitOnLastWindowClosed(False)
    instance = SingleInstance(config.data.root)
    if not instance.acquire():
        print("desktop: the app is already running; brought its window to the front", file=sys.stderr)
        return 0
    log_to_file(config.data)
    log.info("shell starting (data dir %s, registry %s)", config.data.root, config.registry_url)
    controller = ShellController(config, initial_delay_s=initial_delay_s)
    window = MainWindow(controller, app_icon(config))
    instance.activated.connect(window.bring_to_front)
    window.quit_requested.connect(app.quit)
    if demo is not None:
        def on_runtime(state: str, info: dict[str, object]) -> None:
            if state == "running" and info.get("version") == GOOD_VERSION:
                demo.publish_crashing()
        controller.runtime_changed.connect(on_runtime)

    # Python runs signal handlers only between bytecodes: a timer lets SIGTERM reach us.
    signal.signal(signal.SIGTERM, lambda *_: QTimer.singleShot(0, window.request_quit))
    keepalive = QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(250)
    if exit_after_s is not None:
        def finish() -> None:
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                window.grab().save(str(screenshot))
            window.request_quit()
        QTimer.singleShot(int(exit_after_s * 1000), finish)
    window.show()
    controller.start()
    try:
        return int(app.exec())
    finally:
        instance.release()
        if demo is not None:
            demo.stop()
