"""The QtWebEngine side of the runtime's view: profile, token header, navigation and pop-up policy.

Imported only when QtWebEngine is there (see `webview.make_view`). The rules themselves live in
`webview` (`navigation_verdict`); this module wires them to Chromium's hooks:

- the token travels as a request header added by a request interceptor, only to the runtime's
  origin and only for requests the runtime's own pages (or the shell) start. A cookie would
  also reach every other port on 127.0.0.1 (cookies ignore ports) and sit in a cookie jar;
- requests to any other origin are blocked there too, so nothing but the runtime is contacted;
- navigations are judged in `navigationRequested`, which on Qt 6.12 says whether Chromium saw a
  user gesture (`isUserInitiated`). `acceptNavigationRequest` alone cannot tell: a script's
  `location = ...` and `element.click()` arrive there as link clicks. On top of Chromium's
  gesture, each real click on a link (the link under the pointer must be the target) or Enter
  lets at most one navigation leave: typing, or clicking anywhere, starts nothing;
- the profile is off the record: nothing is written to disk, nothing is shared between views
  or data dirs (the runtime's port changes at every start, so stored site data would be
  orphaned anyway).

Known limit (QtWebEngine 6.12): when the runtime answers a subresource request (an image, say)
with a redirect to another origin, Chromium may follow it with the headers already set, before
the interceptor is asked again (and then too late to block it); seen in some runs, not all.
Main-frame redirects are judged by the navigation hooks first and are not followed. The runtime
holds the token itself: it must not redirect its own requests off its origin.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QUrl, Signal
from PySide6.QtWebEngineCore import (
    QWebEngineDownloadRequest,
    QWebEngineNavigationRequest,
    QWebEngineNewWindowRequest,
    QWebEnginePage,
    QWebEnginePermission,
    QWebEngineProfile,
    QWebEngineSettings,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QWidget

from desktop.ui.webview import (
    TOKEN_HEADER,
    Opener,
    RateLimitedLog,
    Verdict,
    check_token,
    checked_runtime_url,
    describe,
    navigation_verdict,
    same_origin,
)

log = logging.getLogger("desktop.ui.webview")

GESTURE_WINDOW_S = 5.0  # as long as Chromium's own transient user activation lasts
_BLANK = QUrl("about:blank")
_GESTURE_KEYS = frozenset({Qt.Key.Key_Return, Qt.Key.Key_Enter})
_GESTURE_BUTTONS = frozenset({Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton})
# Qt asks before leaving a page that set onbeforeunload through javaScriptConfirm, with this text.
_UNLOAD_QUESTION = "Are you sure you want to leave this page? Changes that you made may not be saved."
_OFF = (
    QWebEngineSettings.WebAttribute.LocalContentCanAccessFileUrls,
    QWebEngineSettings.WebAttribute.LocalContentCanAccessRemoteUrls,
    QWebEngineSettings.WebAttribute.NavigateOnDropEnabled,  # a dropped file would be opened as a page
    QWebEngineSettings.WebAttribute.PluginsEnabled,
    QWebEngineSettings.WebAttribute.AllowRunningInsecureContent,
    QWebEngineSettings.WebAttribute.AllowGeolocationOnInsecureOrigins,
    QWebEngineSettings.WebAttribute.AllowWindowActivationFromJavaScript,
    QWebEngineSettings.WebAttribute.JavascriptCanAccessClipboard,
    QWebEngineSettings.WebAttribute.JavascriptCanPaste,
    QWebEngineSettings.WebAttribute.HyperlinkAuditingEnabled,
    QWebEngineSettings.WebAttribute.FullScreenSupportEnabled,
    QWebEngineSettings.WebAttribute.ScreenCaptureEnabled,
    QWebEngineSettings.WebAttribute.DnsPrefetchEnabled,
)


class GestureGate(QObject):
    """Real input on the view: each click on a link, or Enter, lets one navigation leave, soon after.

    A mouse click counts only for the link that was under the pointer (Chromium reports it with
    linkHovered), so a page that navigates somewhere else when the user clicks anywhere gets
    nothing. Keyboard activation has no pointer to check, only freshness.
    """

    def __init__(self, view: QWidget, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(view)
        self._clock = clock
        self._hovered = QUrl()
        self._grant: tuple[float, QUrl | None] | None = None
        view.installEventFilter(self)

    def hover(self, url: str) -> None:
        self._hovered = QUrl(url)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.ChildAdded:
            # Chromium's input widget (the focus proxy) is created and replaced as pages load.
            child = event.child()  # type: ignore[attr-defined]
            if isinstance(child, QWidget):
                child.installEventFilter(self)
        elif not event.spontaneous():
            pass  # only input from the user (or the window system) counts, not events the app sends
        elif kind == QEvent.Type.MouseButtonRelease and event.button() in _GESTURE_BUTTONS:  # type: ignore[attr-defined]
            self._grant = (self._clock(), QUrl(self._hovered))
        elif kind == QEvent.Type.KeyPress and event.key() in _GESTURE_KEYS:  # type: ignore[attr-defined]
            self._grant = (self._clock(), None)
        return False

    def take(self, target: QUrl) -> bool:
        """Use up the latest real input for `target`; False when none fits (it is used up anyway)."""
        grant, self._grant = self._grant, None
        if grant is None or self._clock() - grant[0] > GESTURE_WINDOW_S:
            return False
        link = grant[1]
        return link is None or _comparable(link) == _comparable(target)


def _kind(kind: enum.Enum) -> str:
    """"link click", "form post"...: a navigation type in words, for the log."""
    name = kind.name.removeprefix("NavigationType").removesuffix("Navigation")
    return _KIND_WORDS.get(name, name.lower())


_KIND_WORDS = {"LinkClicked": "link click", "FormSubmitted": "form post", "BackForward": "history navigation",
               "Typed": "navigation", "Reload": "reload", "Redirect": "redirect", "Other": "navigation"}


def _as_http(url: QUrl) -> QUrl:
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme().lower())
    if scheme is None:
        return url
    mapped = QUrl(url)
    mapped.setScheme(scheme)
    return mapped


def _comparable(url: QUrl) -> str:
    return url.toString(QUrl.ComponentFormattingOption.FullyEncoded).rstrip("/")


class TokenInterceptor(QWebEngineUrlRequestInterceptor):
    """Adds the token to the runtime's requests; blocks requests to any other origin."""

    def __init__(self, parent: QObject, on_blocked: Callable[[str], None]) -> None:
        super().__init__(parent)
        self.origin: QUrl | None = None
        self.token = b""
        self._on_blocked = on_blocked

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        url = _as_http(info.requestUrl())  # a WebSocket to the runtime is the runtime too
        origin = self.origin
        if origin is None or not same_origin(url, origin):
            info.block(True)
            self._on_blocked(f"request to {describe(url)} blocked (not the runtime's origin)")
            return
        initiator = info.initiator()
        if initiator.isEmpty() or same_origin(initiator, origin):
            info.setHttpHeader(TOKEN_HEADER.encode("ascii"), self.token)


class RuntimePage(QWebEnginePage):
    """A page whose script dialogs never block the shell and whose pop-ups get no window."""

    def __init__(self, profile: QWebEngineProfile, parent: QObject, on_blocked: Callable[[str], None]) -> None:
        super().__init__(profile, parent)
        self.origin: QUrl | None = None
        self._on_blocked = on_blocked

    def acceptNavigationRequest(self, url: QUrl | str, kind: QWebEnginePage.NavigationType,
                                is_main_frame: bool) -> bool:
        # A first, fail-closed cut: only what might be shown or might be a user's link click
        # goes on to navigationRequested, which knows about user gestures.
        target = QUrl(url)
        if kind == QWebEnginePage.NavigationType.NavigationTypeTyped and target == _BLANK:
            return True  # the shell itself emptying the view (`clear`)
        maybe = navigation_verdict(target, self.origin, main_frame=is_main_frame,
                                   link_click=kind == QWebEnginePage.NavigationType.NavigationTypeLinkClicked,
                                   user_initiated=True)
        if maybe is Verdict.DROP:
            frame = "" if is_main_frame else ", in a frame"
            self._on_blocked(f"{_kind(kind)} to {describe(target)}{frame} dropped")
            return False
        return True

    def createWindow(self, kind: QWebEnginePage.WebWindowType) -> QWebEnginePage | None:  # type: ignore[override]
        return None  # pop-ups never get a window; newWindowRequested decides what happens

    def javaScriptAlert(self, origin: QUrl | str, message: str) -> None:
        self._on_blocked(f"alert() from the page suppressed: {message[:120]!r}")

    def javaScriptConfirm(self, origin: QUrl | str, message: str) -> bool:
        if message == QCoreApplication.translate("QWebEnginePage", _UNLOAD_QUESTION):
            return True  # the shell is reloading or replacing the page: a page may not stop that
        self._on_blocked(f"confirm() from the page suppressed (answered no): {message[:120]!r}")
        return False

    def javaScriptPrompt(self, origin: QUrl | str, message: str, default: str) -> tuple[bool, str]:
        self._on_blocked(f"prompt() from the page suppressed (cancelled): {message[:120]!r}")
        return False, ""

    def javaScriptConsoleMessage(self, level: QWebEnginePage.JavaScriptConsoleMessageLevel, message: str,
                                 line: int, source: str) -> None:
        # Page errors are the runtime's business, not warnings of the shell.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("page console (%s:%d): %r", describe(QUrl(source)), line, message[:500])


class RuntimeView(QWebEngineView):
    """The runtime's page, and nothing else.

    Signals: `blocked(str)` says what was dropped (rate-limited like the log, for a status line);
    `download_refused(str)` names a download the page tried to start (never written anywhere).
    """

    blocked = Signal(str)
    download_refused = Signal(str)

    def __init__(self, parent: QWidget | None = None, *, opener: Opener) -> None:
        super().__init__(parent)
        self._opener = opener
        self._limiter = RateLimitedLog(log)
        self.gestures = GestureGate(self)
        # No storage name: off the record. The page is the view's child and the profile the
        # page's, so the page always goes first (Chromium insists on that order).
        profile = QWebEngineProfile()
        profile.setHttpCacheType(QWebEngineProfile.HttpCacheType.MemoryHttpCache)
        profile.setPersistentCookiesPolicy(QWebEngineProfile.PersistentCookiesPolicy.NoPersistentCookies)
        self._interceptor = TokenInterceptor(profile, self._report)
        profile.setUrlRequestInterceptor(self._interceptor)
        profile.downloadRequested.connect(self._refuse_download)
        self._page = RuntimePage(profile, self, self._report)
        profile.setParent(self._page)
        self._profile = profile
        settings = self._page.settings()
        for attribute in _OFF:
            settings.setAttribute(attribute, False)
        settings.setAttribute(QWebEngineSettings.WebAttribute.WebRTCPublicInterfacesOnly, True)
        # Chromium hands schemes it does not know (mailto:, smb:, vscode:, ms-msdt:) to Qt, which
        # opens them with QDesktopServices only if navigationRequested accepts them; ours never
        # does, and opens mailto through the opener instead. "Disallow" would drop mailto too.
        settings.setUnknownUrlSchemePolicy(
            QWebEngineSettings.UnknownUrlSchemePolicy.AllowUnknownUrlSchemesFromUserInteraction)
        self._page.linkHovered.connect(self.gestures.hover)
        self._page.navigationRequested.connect(self._on_navigation)
        self._page.newWindowRequested.connect(self._on_new_window)
        self._page.permissionRequested.connect(self._deny_permission)
        self._page.fileSystemAccessRequested.connect(lambda request: request.reject())
        self._page.fullScreenRequested.connect(lambda request: request.reject())
        self._page.registerProtocolHandlerRequested.connect(lambda request: request.reject())
        self._page.desktopMediaRequested.connect(lambda request: request.cancel())
        self.setPage(self._page)

    def show_runtime(self, url: str, token: str) -> None:
        """Load the runtime's page at `url`, proving `token` on every request to its origin.

        ValueError when `url` is not http on 127.0.0.1, [::1] or localhost with a port, or the
        token could not travel as a header; nothing is loaded then.
        """
        origin = checked_runtime_url(url)
        header = check_token(token)
        self._interceptor.origin = origin
        self._interceptor.token = header
        self._page.origin = origin
        self.setUrl(origin)

    def clear(self) -> None:
        """Forget the runtime (it stopped): show an empty page, send nothing anywhere."""
        self._interceptor.origin = None
        self._interceptor.token = b""
        self._page.origin = None
        self.setUrl(_BLANK)

    def runtime_url(self) -> QUrl | None:
        """The origin the view is limited to (None before `show_runtime`)."""
        return self._page.origin

    # --- policy ---------------------------------------------------------------------------

    def _report(self, what: str) -> None:
        if self._limiter.warning(what):
            self.blocked.emit(what)

    def _leave(self, target: QUrl, verdict: Verdict, how: str) -> None:
        """Hand a user's link click to the system, once per real input; report anything else."""
        if verdict is Verdict.EXTERNAL and self.gestures.take(target):
            log.info("web view: opening %s outside the app", describe(target))
            self._opener(QUrl(target))
            return
        self._report(f"{how} to {describe(target)} dropped")

    def _on_navigation(self, request: QWebEngineNavigationRequest) -> None:
        # A request left alone is accepted (and an unknown scheme then opened by Qt itself):
        # reject first, accept only what is positively the runtime's.
        target = request.url()
        verdict = Verdict.DROP
        try:
            link = request.navigationType() == QWebEngineNavigationRequest.NavigationType.LinkClickedNavigation
            verdict = navigation_verdict(target, self._page.origin, main_frame=request.isMainFrame(),
                                         link_click=link, user_initiated=request.isUserInitiated())
        finally:
            if verdict is Verdict.SHOW:
                request.accept()
            else:
                request.reject()
        if verdict is not Verdict.SHOW:
            how = _kind(request.navigationType()) + ("" if request.isUserInitiated() else " by script")
            self._leave(target, verdict, how)

    def _on_new_window(self, request: QWebEngineNewWindowRequest) -> None:
        target = request.requestedUrl()
        user = request.isUserInitiated()
        verdict = navigation_verdict(target, self._page.origin, main_frame=True, link_click=True, user_initiated=user)
        if verdict is Verdict.SHOW:
            if user:
                self.setUrl(target)  # an in-app link meant for a new tab: this view is the app's tab
            else:
                self._report(f"pop-up by script of {describe(target)} dropped")
            return
        self._leave(target, verdict, "new window" + ("" if user else " by script"))

    def _refuse_download(self, download: QWebEngineDownloadRequest) -> None:
        download.cancel()
        what = describe(download.url())
        log.warning("web view: download of %s refused (the app does not save files from its page)", what)
        self.download_refused.emit(what)

    def _deny_permission(self, permission: QWebEnginePermission) -> None:
        self._report(f"{permission.permissionType().name} permission for {describe(permission.origin())} denied")
        permission.deny()
