"""Start the GUI: single instance, translations, window, controller."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QLocale, Qt, QTimer, QTranslator
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication

from desktop.core.shell import Shell, log_to_file
from desktop.ui.controller import ShellController
from desktop.ui.single_instance import SingleInstance
from desktop.ui.webview import prepare_webengine, webengine_available
from desktop.ui.widgets import is_dark
from desktop.ui.window import MainWindow

log = logging.getLogger(__name__)


def app_icon(shell: Shell) -> QIcon:
    return QIcon(str(shell.config.resources / "icons" / "desktop.svg"))


def ensure_app() -> QApplication:
    """The QApplication (created once, with QtWebEngine prepared first when it is there)."""
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    if webengine_available():
        prepare_webengine()
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Desktop Shell")
    app.setDesktopFileName("desktop-shell")  # Wayland app id: matches the installed desktop-shell.desktop
    app.setQuitOnLastWindowClosed(False)
    page_follows_color_scheme(app)
    return app


def page_follows_color_scheme(app: QGuiApplication) -> bool:
    """Let the runtime's page follow the desktop's light or dark scheme (CSS prefers-color-scheme).

    Chromium takes it from a flag when it starts, which is when the first web view is made: call
    this after the QApplication exists and before the window. True when the scheme is dark.
    """
    scheme = app.styleHints().colorScheme()
    dark = scheme == Qt.ColorScheme.Dark or (scheme == Qt.ColorScheme.Unknown and is_dark(app.palette()))
    flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
    if "preferredColorScheme" not in flags:  # the user's own choice wins
        os.environ["QTWEBENGINE_CHROMIUM_FLAGS"] = f"{flags} --blink-settings=preferredColorScheme={0 if dark else 1}"
    return dark


def install_translations(app: QApplication, resources: Path) -> QTranslator | None:
    """The user's language from resources/translations/desktop_<locale>.qm, when one is shipped."""
    translator = QTranslator(app)
    if translator.load(QLocale(), "desktop", "_", str(resources / "translations")):
        app.installTranslator(translator)
        return translator
    return None


def report_healthy_in_background() -> threading.Thread:
    """Tell the launcher this shell started fine, off the GUI thread (the mark is written and fsynced,
    and the pointer committed). Not a daemon: quitting at once still waits for the mark, without
    which the launcher would blame this version for a crash at startup."""
    thread = threading.Thread(target=Shell.report_healthy, name="health-mark")
    thread.start()
    return thread


def run_gui(shell: Shell, *, initial_delay_s: float = 5.0, screenshot: Path | None = None,
            exit_after_s: float | None = None,
            on_controller: Callable[[ShellController], None] | None = None,
            instance: SingleInstance | None = None) -> int:
    """Run the shell until the user quits; returns the process exit code (the launcher's restart code
    when the user chose to restart into a new version of the app).

    `instance` is a SingleInstance the caller already holds (the demo takes it before it resets
    its data); otherwise it is taken here, and a second start only brings the first forward.
    """
    app = ensure_app()
    if instance is None:
        instance = SingleInstance(shell.data_dir)
        if not instance.acquire():
            print("desktop: the app is already running; brought its window to the front", file=sys.stderr)
            return 0
    install_translations(app, shell.config.resources)
    log_to_file(shell)
    log.info("shell starting (data dir %s, registry %s)", shell.data_dir, shell.registry_display)
    controller = ShellController(shell, initial_delay_s=initial_delay_s)
    if on_controller is not None:
        on_controller(controller)
    window = MainWindow(controller, app_icon(shell))
    instance.activated.connect(window.bring_to_front)
    window.quit_requested.connect(app.exit)

    # Python runs signal handlers only between bytecodes: the timer below lets SIGTERM reach us.
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, lambda *_: QTimer.singleShot(0, window.request_quit))
    keepalive = QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(200)
    if exit_after_s is not None:
        def finish() -> None:
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                window.grab().save(str(screenshot))
            window.request_quit()
        QTimer.singleShot(int(exit_after_s * 1000), finish)
    window.show()
    # The window is up once the event loop runs: only then is this shell healthy for its launcher.
    QTimer.singleShot(0, report_healthy_in_background)
    controller.start()
    try:
        code = int(app.exec())
        log.info("the window is closed")
        return code
    finally:
        instance.release()
