"""GUI fixtures: a real window (offscreen) on a real data dir, feed and runtime processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from desktop.core.config import AppConfig
from desktop.core.shell import Shell
from desktop.ui.controller import ShellController
from desktop.ui.window import MainWindow
from tests.support.feed import Feed
from tests.support.server import LoopbackServer

# Most GUI tests look at the shell, not at the runtime's page: the plain panel is enough and
# keeps Chromium out of them; one test below turns the web view on.
os.environ.setdefault("DESKTOP_NO_WEBVIEW", "1")
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
try:
    # QtWebEngine must be loaded before the QApplication exists.
    import PySide6.QtWebEngineWidgets  # noqa: F401
except ImportError:
    pass


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def feed(server: LoopbackServer, tmp_path: Path) -> Feed:
    return Feed(tmp_path / "feed", server, tmp_path / "work")


@pytest.fixture
def shell(qtbot: QtBot, feed: Feed, tmp_path: Path) -> Iterator[Callable[..., tuple[MainWindow, ShellController]]]:
    made: list[tuple[MainWindow, ShellController]] = []

    def make(config: AppConfig | None = None, **overrides: object) -> tuple[MainWindow, ShellController]:
        config = config or feed.config(tmp_path / "data", **overrides)
        controller = ShellController(Shell(config), initial_delay_s=3600)
        window = MainWindow(controller)
        qtbot.addWidget(window)
        window.show()
        made.append((window, controller))
        return window, controller

    yield make
    for _window, controller in made:
        controller.shutdown()


def running_label(window: MainWindow) -> str:
    return window.runtime_label.text()
