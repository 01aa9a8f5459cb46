"""GUI fixtures: a real window (offscreen) on a real data dir, feed and runtime processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget
from pytestqt.qtbot import QtBot

from desktop.core.config import AppConfig
from desktop.core.shell import Shell
from desktop.ui.controller import ShellController
from desktop.ui.window import MainWindow
from tests.support.feed import Feed
from tests.support.server import LoopbackServer

# Most GUI tests look at the shell, not at the runtime's page: the plain panel is enough and
# keeps Chromium out of them; the page tests turn the web view on.
os.environ.setdefault("DESKTOP_NO_WEBVIEW", "1")
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
try:
    # QtWebEngine must be loaded before the QApplication exists.
    import PySide6.QtWebEngineWidgets  # noqa: F401
except ImportError:
    pass

WAIT_MS = 30_000
MakeShell = Callable[..., tuple[MainWindow, ShellController]]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def feed(server: LoopbackServer, tmp_path: Path) -> Feed:
    return Feed(tmp_path / "feed", server, tmp_path / "work")


@pytest.fixture
def shell(qtbot: QtBot, feed: Feed, tmp_path: Path) -> Iterator[MakeShell]:
    """make(config=None, *, window=True, **MainWindow options, **config overrides) -> (window, controller)."""
    made: list[tuple[MainWindow, ShellController]] = []

    def make(config: AppConfig | None = None, *, clock: Callable[[], float] = time.time,
             opener: Any = None, tray: bool | None = None, **overrides: object) -> tuple[MainWindow, ShellController]:
        config = config or feed.config(tmp_path / "data", **overrides)
        controller = ShellController(Shell(config), initial_delay_s=3600, clock=clock)
        options: dict[str, Any] = {"tray": tray}
        if opener is not None:
            options["opener"] = opener
        window = MainWindow(controller, **options)
        qtbot.addWidget(window)
        window.show()
        made.append((window, controller))
        return window, controller

    yield make
    for _window, controller in made:
        controller.shutdown()
    for _window, controller in made:
        controller.supervisor.close()


def running_label(window: MainWindow) -> str:
    return window.runtime_label.full_text()


def wait_running(qtbot: QtBot, window: MainWindow, version: str, timeout: int = WAIT_MS) -> None:
    qtbot.waitUntil(lambda: f"Running {version} " in running_label(window), timeout=timeout)


def started(qtbot: QtBot, make: MakeShell, version: str = "1.0.0", **options: Any) -> tuple[MainWindow,
                                                                                            ShellController]:
    window, controller = make(**options)
    controller.start()
    wait_running(qtbot, window, version)
    return window, controller


def check(qtbot: QtBot, window: MainWindow, controller: ShellController) -> None:
    """Check for updates as the user does (App → Check for updates) and wait for the outcome."""
    with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
        window.check_action.trigger()


def message_box(qtbot: QtBot, window: MainWindow) -> QMessageBox:
    qtbot.waitUntil(lambda: window.message_box is not None and window.message_box.isVisible(), timeout=WAIT_MS)
    assert window.message_box is not None
    return window.message_box


def activate(qtbot: QtBot, widget: QWidget) -> None:
    """Make `widget`'s window the active one, so keys go where a user's would."""
    widget.activateWindow()
    qtbot.waitUntil(widget.isActiveWindow, timeout=WAIT_MS)


class Heartbeat(QObject):
    """A GUI-thread timer that records how late each tick comes: the longest GUI-thread stall."""

    def __init__(self, interval_ms: int = 10) -> None:
        super().__init__()
        self.interval = interval_ms / 1000
        self.ticks: list[float] = []
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.monotonic()))

    def __enter__(self) -> Heartbeat:
        self.ticks = [time.monotonic()]
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.stop()
        self.ticks.append(time.monotonic())

    @property
    def longest_stall(self) -> float:
        """The longest gap between two ticks, minus the interval."""
        gaps = [b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False)]
        return max(gaps, default=0.0) - self.interval


def dark_palette() -> QPalette:
    palette = QPalette()
    colors = {
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
    for role, color in colors.items():
        palette.setColor(role, QColor(color))
    return palette


@pytest.fixture
def dark(qapp: QApplication) -> Iterator[QPalette]:
    """The whole app in a dark palette, as a dark desktop theme would set it."""
    before = qapp.palette()
    palette = dark_palette()
    qapp.setPalette(palette)
    yield palette
    qapp.setPalette(before)


def visible_texts(root: QWidget) -> list[tuple[str, str]]:
    """(widget class, text) of every visible text a user can read in `root`'s window."""
    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import QAbstractButton, QGroupBox, QLabel, QMenu

    found: list[tuple[str, str]] = []
    for widget in [root, *root.findChildren(QWidget)]:
        if not widget.isVisibleTo(root) and widget is not root:
            continue
        if isinstance(widget, QLabel) and widget.text():
            text = widget.full_text() if hasattr(widget, "full_text") else widget.text()
            found.append(("QLabel", text))
        elif isinstance(widget, QAbstractButton) and widget.text():
            found.append((type(widget).__name__, widget.text()))
        elif isinstance(widget, QGroupBox):
            found.append(("QGroupBox", widget.title()))
        if widget.isWindow() and widget.windowTitle():
            found.append(("title", widget.windowTitle()))
        if widget.toolTip():
            found.append(("tooltip", widget.toolTip()))
    for menu in root.findChildren(QMenu):
        found.append(("menu", menu.title()))
    for action in root.findChildren(QAction):
        if action.text() and not action.isSeparator():
            found.append(("action", action.text()))
    return found
