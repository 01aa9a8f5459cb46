"""The runtime's UI inside the window (QtWebEngine), limited to the runtime's own origin."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QWidget

from desktop.core.runmode import restore_library_path

log = logging.getLogger(__name__)


@contextmanager
def user_library_path() -> Iterator[None]:
    """While starting outside programs (the browser, the file manager) from the frozen app,
    give them the user's LD_LIBRARY_PATH, not the bundle's."""
    if not getattr(sys, "frozen", False):
        yield
        return
    saved = dict(os.environ)
    restore_library_path(os.environ, saved)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def open_external(url: QUrl) -> bool:
    """Open `url` with the desktop's default handler."""
    with user_library_path():
        return bool(QDesktopServices.openUrl(url))


def webengine_available() -> bool:
    if os.environ.get("DESKTOP_NO_WEBVIEW"):
        return False
    try:
        import PySide6.QtWebEngineWidgets  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_webengine() -> None:
    """Chromium refuses to run as root with its sandbox; only there is it disabled."""
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "QTWEBENGINE_DISABLE_SANDBOX" not in os.environ:
        os.environ["QTWEBENGINE_DISABLE_SANDBOX"] = "1"


def same_origin(a: QUrl, b: QUrl) -> bool:
    return (a.scheme(), a.host(), a.port()) == (b.scheme(), b.host(), b.port())


def make_view(parent: QWidget | None = None) -> QWidget | None:
    """A web view that only shows the runtime's origin; anything else opens in the browser."""
    if not webengine_available():
        return None
    from PySide6.QtWebEngineCore import QWebEnginePage
    from PySide6.QtWebEngineWidgets import QWebEngineView

    class RuntimePage(QWebEnginePage):
        origin = QUrl()

        def acceptNavigationRequest(self, url: QUrl | str, kind: QWebEnginePage.NavigationType,
                                    is_main_frame: bool) -> bool:
            target = QUrl(url)
            if self.origin.isValid() and not same_origin(target, self.origin):
                open_external(target)
                return False
            return True

        def createWindow(self, kind: QWebEnginePage.WebWindowType) -> QWebEnginePage | None:  # type: ignore[override]
            return None  # pop-ups are not given a window of the shell

    class RuntimeView(QWebEngineView):
        def __init__(self, parent: QWidget | None = None) -> None:
            super().__init__(parent)
            self.runtime_page = RuntimePage(self)
            self.setPage(self.runtime_page)

        def show_runtime(self, url: str) -> None:
            self.runtime_page.origin = QUrl(url)
            self.setUrl(QUrl(url))

    return RuntimeView(parent)
