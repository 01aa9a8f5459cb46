"""The runtime's UI inside the window (QtWebEngine), limited to the runtime's own origin.

The view (`make_view`) shows only the runtime's origin and proves the launch token on every request
to it. Everything that would leave that origin is decided here, without QtWebEngine, so the rules
can be read in one place and tested alone:

- only a user's main-frame link click to http, https or mailto goes to the system (the opener);
- script-driven navigations, redirects, form posts, subframes and pop-ups elsewhere are dropped
  and logged (rate-limited);
- a URL the shell is asked to show as the runtime must be http on a loopback name with a port.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QWidget

from desktop.core.runmode import restore_library_path

if TYPE_CHECKING:
    from desktop.ui.runtime_view import RuntimeView

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Desktop-Token"
"""The request header that carries DESKTOP_RUNTIME_TOKEN from the view to the runtime."""
EXTERNAL_SCHEMES = frozenset({"http", "https", "mailto"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_LOGGED_URL = 200

Opener = Callable[[QUrl], object]
"""Hands a URL to the operating system (the browser, the mail client)."""


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
    return (a.scheme().lower(), a.host().lower(), a.port()) == (b.scheme().lower(), b.host().lower(), b.port())


def describe(url: QUrl) -> str:
    """`url` fit for a log line or a message: no credentials, control characters escaped, capped."""
    clean = QUrl(url)
    if clean.userInfo():
        clean.setUserInfo(None)  # type: ignore[arg-type]  # a null string removes the "@" too
    shown = clean.toString(QUrl.ComponentFormattingOption.FullyEncoded)
    shown = "".join(ch if ch.isprintable() else f"%{ord(ch):02X}" for ch in shown)
    return shown if len(shown) <= MAX_LOGGED_URL else shown[:MAX_LOGGED_URL] + "…"


def checked_runtime_url(url: str) -> QUrl:
    """The runtime's page URL, if it is http on 127.0.0.1, [::1] or localhost with a port.

    Core already refuses any other ready line; this is the last line of defence before a page is
    loaded in a window of the shell (a file: page could read local files, a remote one phish).
    """
    if not isinstance(url, str) or any(not ch.isprintable() or ch.isspace() for ch in url):
        raise ValueError("the runtime's URL has control characters or spaces")
    parsed = QUrl(url, QUrl.ParsingMode.StrictMode)
    if not parsed.isValid():
        raise ValueError(f"the runtime's URL is not valid: {describe(QUrl(url))}")
    if parsed.scheme() != "http" or not url.lower().startswith("http://"):
        raise ValueError(f"the runtime's URL must be http://, not {describe(parsed)}")
    if parsed.host().lower() not in LOOPBACK_HOSTS:
        raise ValueError(f"the runtime's URL must be on 127.0.0.1, [::1] or localhost: {describe(parsed)}")
    if parsed.port() <= 0:
        raise ValueError(f"the runtime's URL must name its port: {describe(parsed)}")
    if parsed.userInfo():
        raise ValueError("the runtime's URL must not carry credentials")
    return parsed


def check_token(token: str) -> bytes:
    """The launch token as a header value; ValueError if it could not be sent as one."""
    if not isinstance(token, str) or not token:
        raise ValueError("the runtime's launch token is empty")
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ValueError("the runtime's launch token must be printable ASCII without spaces")
    return token.encode("ascii")


def login_url(url: str, token: str) -> QUrl:
    """The bundled runtime's sign-in link for a plain browser ("Open in browser").

    It trades the token for a cookie and redirects to the page; runtimes that do not offer it
    answer 403 there, as to any request without the token.
    """
    base = checked_runtime_url(url)
    check_token(token)
    signed = QUrl()
    signed.setScheme("http")
    signed.setHost(base.host())
    signed.setPort(base.port())
    signed.setPath("/login")
    signed.setQuery(f"token={quote(token, safe='')}")
    return signed


class Verdict(enum.Enum):
    SHOW = "show"  # the runtime's own origin: load it in the view
    EXTERNAL = "external"  # a user's link click elsewhere: hand it to the system
    DROP = "drop"  # anything else that would leave the origin


def external_url_ok(url: QUrl) -> bool:
    """Whether the system may be handed `url` (after a user's click)."""
    scheme = url.scheme().lower()
    if scheme not in EXTERNAL_SCHEMES or not url.isValid() or url.userInfo():
        return False  # credentials in a link are a phishing trick (https://bank.example@evil)
    if scheme == "mailto":
        return bool(url.path())
    return bool(url.host())


def navigation_verdict(target: QUrl, origin: QUrl | None, *, main_frame: bool, link_click: bool,
                       user_initiated: bool) -> Verdict:
    """What the view does with a navigation to `target` (see the module docstring)."""
    if origin is not None and same_origin(target, origin):
        return Verdict.SHOW
    if not main_frame and target.scheme() == "about" and target.path() in ("blank", "srcdoc"):
        return Verdict.SHOW  # an empty or inline frame belongs to the page that made it
    if main_frame and link_click and user_initiated and external_url_ok(target):
        return Verdict.EXTERNAL
    return Verdict.DROP


class RateLimitedLog:
    """Warnings at most `burst` per `period_s`; the rest are counted and summed up later.

    A page can try thousands of navigations a second; the log must stay readable.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 5, period_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period_s
        self._clock = clock
        self._window_start = clock()
        self._count = 0
        self._suppressed = 0

    def warning(self, message: str) -> bool:
        """Log `message` unless over the limit; True when it was logged."""
        now = self._clock()
        if now - self._window_start >= self._period:
            if self._suppressed:
                self._logger.warning("web view: %d more like this suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self._burst:
            self._count += 1
            self._logger.warning("web view: %s", message)
            return True
        self._suppressed += 1
        return False


def make_view(parent: QWidget | None = None, opener: Opener | None = None) -> RuntimeView | None:
    """A web view that shows only the runtime's origin (None when QtWebEngine is not available).

    `opener` receives what a user's link click sends to the system (default: the desktop's
    handler, with the user's library path). Call `show_runtime(url, token)` to load the page.
    """
    if not webengine_available():
        return None
    from desktop.ui.runtime_view import RuntimeView

    return RuntimeView(parent, opener=opener or open_external)
