"""The main window: the runtime's UI, a banner for what needs the user, a status bar, menus, tray."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from packaging.version import Version
from PySide6.QtCore import QEvent, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QStyle,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from desktop import __version__
from desktop.core.results import (
    Crashed,
    Failed,
    Problem,
    ReleaseInfo,
    RollbackReport,
    Running,
    RuntimeEvent,
    RuntimeState,
    StagedWaiting,
    StartFailed,
    Starting,
    Stopped,
    UpdateState,
)
from desktop.ui.controller import AppView, ShellController, UpdateView
from desktop.ui.dialogs import LogsDialog, SettingsDialog, UpdateDialog, WhatsNewDialog, details_text
from desktop.ui.webview import Opener, login_url, make_view, open_external
from desktop.ui.widgets import Action, Banner, ElidedLabel, Notice, Tone, plain_label, plain_tip, state_dot_color
from desktop.ui.wording import app_updates_text, days_text, problem_text, source_text, update_text

ZOOM_STEPS = (0.5, 0.67, 0.75, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
QUIT_FALLBACK_MS = 4000  # quit even if the runtime's stop never reports back
STATE_TONES = {RuntimeState.RUNNING: Tone.SUCCESS, RuntimeState.STARTING: Tone.WARNING,
               RuntimeState.CRASHED: Tone.WARNING, RuntimeState.FAILED: Tone.ERROR}


def _page(*widgets: QWidget, margin: int) -> QWidget:
    page = QWidget()
    layout = QVBoxLayout(page)
    layout.setContentsMargins(margin, margin, margin, margin)
    layout.addStretch(1)
    for widget in widgets:
        layout.addWidget(widget)
    layout.addStretch(2)
    return page


class MainWindow(QMainWindow):
    """Renders the controller; every action goes back through it."""

    quit_requested = Signal(int)  # the exit code: 0, or the launcher's "start the new app" code
    tray_hint_shown = Signal()

    def __init__(self, controller: ShellController, icon: QIcon | None = None, *, opener: Opener = open_external,
                 tray: bool | None = None) -> None:
        super().__init__()
        self.controller = controller
        self.opener = opener
        self.setWindowTitle(self.tr("Notes — Desktop Shell"))
        if icon is not None:
            self.setWindowIcon(icon)
        em = self.fontMetrics().height()
        self.resize(em * 60, em * 42)
        self.runtime_url: str | None = None
        self.runtime_token = ""
        self.update_dialog: UpdateDialog | None = None
        self.logs_dialog: LogsDialog | None = None
        self.whats_new_dialog: WhatsNewDialog | None = None
        self.message_box: QMessageBox | None = None
        self.last_whats_new: tuple[Version, tuple[ReleaseInfo, ...]] | None = None
        self.last_problem: tuple[str, str, str, tuple[str, ...]] | None = None  # title, text, detail, output
        self._dismissed: set[str] = set()
        self._quitting = False
        self.exit_code = 0
        self._hinted = False
        self._asked = False  # the user asked for the check under way: show its outcome whatever it is
        self._shown_state: tuple[UpdateState, str] | None = None

        self._build_pages(em)
        self.banner = Banner(self.tr("Dismiss"))
        self.banner.dismissed.connect(self._dismissed.add)
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.banner)
        column.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self._build_status_bar()
        self._build_actions()
        self.tray_menu = self._build_tray_menu()
        self.tray = self._build_tray(icon, tray)

        controller.runtime_event.connect(self.on_runtime_event)
        controller.update_changed.connect(self.on_update_changed)
        controller.check_finished.connect(self._on_check_finished)
        controller.rollback_started.connect(self._on_rollback_started)
        controller.rolled_back.connect(self._on_rolled_back)
        controller.skipped.connect(self._on_skipped)
        controller.allowed.connect(self._on_allowed)
        controller.whats_new.connect(self._on_whats_new)
        controller.reminder.connect(self._on_reminder)
        controller.action_failed.connect(self._on_action_failed)
        controller.app_changed.connect(self.on_app_changed)
        controller.app_allowed.connect(self._on_app_allowed)
        controller.stopped.connect(self._finish_quit)
        self._show_runtime_state(RuntimeState.STARTING, self.tr("Starting the runtime…"))
        self.on_update_changed(controller.view)
        self.on_app_changed(controller.app)

    # -- building -------------------------------------------------------------------------------
    def _build_pages(self, em: int) -> None:
        self.stack = QStackedWidget()
        self.starting_label = plain_label(self.tr("Starting the runtime…"))
        self.starting_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.starting_page = _page(self.starting_label, margin=em * 2)
        self.web = make_view(opener=self.opener)
        if self.web is not None:
            self.web.setAccessibleName(self.tr("The runtime's page"))
        self.url_label = plain_label()
        self.url_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                               | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.open_browser = QPushButton(self.tr("Open in browser"))
        self.open_browser.clicked.connect(self._open_in_browser)
        browser_row = QHBoxLayout()
        browser_row.addStretch(1)
        browser_row.addWidget(self.open_browser)
        browser_row.addStretch(1)
        row = QWidget()
        row.setLayout(browser_row)
        self.panel_page = _page(plain_label(self.tr("The runtime is running. Its page opens in your browser:")),
                                self.url_label, row, margin=em * 2)
        self.error_title = plain_label()
        font = self.error_title.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.25)
        self.error_title.setFont(font)
        self.error_reason = plain_label()
        self.error_log = QPlainTextEdit()
        self.error_log.setReadOnly(True)
        self.error_log.setAccessibleName(self.tr("The runtime's last output"))
        self.error_log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.retry_button = QPushButton(self.tr("Try again"))
        self.retry_button.clicked.connect(self.controller.restart_runtime)
        self.failed_copy = QPushButton(self.tr("Copy details"))
        self.failed_copy.clicked.connect(self.copy_details)
        self.failed_logs = QPushButton(self.tr("Open logs"))
        self.failed_logs.clicked.connect(self.show_logs)
        buttons = QHBoxLayout()
        for button in (self.retry_button, self.failed_copy, self.failed_logs):
            button.setAutoDefault(False)
            buttons.addWidget(button)
        buttons.addStretch(1)
        button_row = QWidget()
        button_row.setLayout(buttons)
        self.failed_page = _page(self.error_title, self.error_reason, plain_label(self.tr("Its last output:")),
                                 self.error_log, button_row, margin=em)
        for page in (self.starting_page, self.panel_page, self.failed_page):
            self.stack.addWidget(page)
        if self.web is not None:
            self.stack.addWidget(self.web)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.state_dot = QLabel("●")
        self.state_dot.setAccessibleName(self.tr("Runtime state"))
        self.runtime_label = ElidedLabel()
        self.update_label = ElidedLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(self.fontMetrics().horizontalAdvance("M") * 10)
        self.progress.setRange(0, 100)
        self.progress.setAccessibleName(self.tr("Download progress"))
        self.progress.hide()
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.setToolTip(self.tr("Stop the download (it resumes from where it stopped next time)"))
        self.cancel_button.setAutoDefault(False)
        self.cancel_button.clicked.connect(self.controller.cancel_download)
        self.cancel_button.hide()
        bar.addWidget(self.state_dot)
        bar.addWidget(self.runtime_label, 2)
        bar.addWidget(self.update_label, 3)
        bar.addWidget(self.progress)
        bar.addWidget(self.cancel_button)
        self.policy_label = QLabel(self.tr("Managed by policy"))
        self.policy_label.setObjectName("policy")
        self.policy_label.hide()
        bar.addPermanentWidget(self.policy_label)

    def _action(self, text: str, slot: Callable[[], Any], *shortcuts: QKeySequence | QKeySequence.StandardKey | str,
                name: str = "") -> QAction:
        action = QAction(text, self)
        action.triggered.connect(lambda _checked=False: slot())
        keys: list[QKeySequence] = []
        for shortcut in shortcuts:
            for key in QKeySequence.keyBindings(shortcut) if isinstance(shortcut, QKeySequence.StandardKey) \
                    else [QKeySequence(shortcut)]:
                if not key.isEmpty() and key not in keys:
                    keys.append(key)  # the same key twice on one action makes it ambiguous: it never fires
        if keys:
            action.setShortcuts(keys)
        if name:
            action.setObjectName(name)
        self.addAction(action)  # shortcuts work while the menu bar is hidden and the page has focus
        return action

    def _build_actions(self) -> None:
        c = self.controller
        self.check_action = self._action(self.tr("Check for updates"), lambda: self.check_now(),
                                         name="check")
        self.updates_action = self._action(self.tr("Updates…"), self.show_updates, "Ctrl+U", name="updates")
        self.settings_action = self._action(self.tr("Settings…"), self.show_settings,
                                            QKeySequence.StandardKey.Preferences, "Ctrl+,", name="settings")
        self.data_action = self._action(self.tr("Open data folder"), self.open_data_folder, name="data-folder")
        self.logs_action = self._action(self.tr("Logs"), self.show_logs, "Ctrl+L", name="logs")
        self.quit_action = self._action(self.tr("Quit"), self.request_quit, QKeySequence.StandardKey.Quit, "Ctrl+Q",
                                        name="quit")
        self.reload_action = self._action(self.tr("Reload page"), self.reload_page, "Ctrl+R", "F5", name="reload")
        self.zoom_in_action = self._action(self.tr("Zoom in"), lambda: self.zoom(+1), QKeySequence.StandardKey.ZoomIn,
                                           "Ctrl++", "Ctrl+=", name="zoom-in")
        self.zoom_out_action = self._action(self.tr("Zoom out"), lambda: self.zoom(-1),
                                            QKeySequence.StandardKey.ZoomOut, "Ctrl+-", name="zoom-out")
        self.zoom_reset_action = self._action(self.tr("Actual size"), lambda: self.zoom(0), "Ctrl+0",
                                              name="zoom-reset")
        self.focus_banner_action = self._action(self.tr("Go to notifications"), self.focus_banner, "F6",
                                                name="focus-banner")
        self.restart_action = self._action(self.tr("Restart runtime"), c.restart_runtime, "Ctrl+Shift+R",
                                           name="restart-runtime")
        self.restart_update_action = self._action(self.tr("Restart to update"), self.restart_to_update,
                                                  name="restart-to-update")
        self.restart_app_action = self._action(self.tr("Restart to update the app"), self.restart_app,
                                               name="restart-app")
        self.rollback_action = self._action(self.tr("Roll back…"), self.ask_roll_back, name="roll-back")
        self.whats_new_action = self._action(self.tr("What's new"), self.show_whats_new, name="whats-new")
        self.about_action = self._action(self.tr("About"), self.show_about, name="about")
        for action in self.findChildren(QAction):
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        menus: tuple[tuple[str, tuple[QAction | None, ...]], ...] = (
            (self.tr("&App"), (self.check_action, self.updates_action, self.restart_app_action, None,
                               self.settings_action, self.data_action, self.logs_action, None, self.quit_action)),
            (self.tr("&View"), (self.reload_action, None, self.zoom_in_action, self.zoom_out_action,
                                self.zoom_reset_action, None, self.focus_banner_action)),
            (self.tr("&Runtime"), (self.restart_action, self.restart_update_action, self.rollback_action)),
            (self.tr("&Help"), (self.whats_new_action, self.about_action)),
        )
        for title, actions in menus:
            menu = self.menuBar().addMenu(title)
            for entry in actions:
                if entry is None:
                    menu.addSeparator()
                else:
                    menu.addAction(entry)
        self._update_actions()

    def _build_tray_menu(self) -> QMenu:
        menu = QMenu(self)
        self.show_action = QAction(self.tr("Show window"), self)
        self.show_action.triggered.connect(self.bring_to_front)
        entries: tuple[QAction | None, ...] = (self.show_action, None, self.updates_action, self.restart_update_action,
                                               self.restart_app_action, self.check_action, None, self.quit_action)
        for action in entries:
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        return menu

    def _build_tray(self, icon: QIcon | None, wanted: bool | None) -> QSystemTrayIcon | None:
        available = QSystemTrayIcon.isSystemTrayAvailable() if wanted is None else wanted
        if not available:
            return None
        if icon is None or icon.isNull():
            icon = self.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon)
        tray = QSystemTrayIcon(icon, self)
        tray.setToolTip(self.windowTitle())
        tray.setContextMenu(self.tray_menu)
        tray.activated.connect(self._on_tray_activated)
        tray.show()
        return tray

    def _on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.bring_to_front()

    # -- the runtime ----------------------------------------------------------------------------
    def on_runtime_event(self, event: RuntimeEvent) -> None:
        if isinstance(event, Running):
            self._show_runtime_state(event.state, self.tr("Running {version} ({source})").format(
                version=event.version, source=source_text(event.source)))
            self._show_runtime(event.url or "", event.token)
        elif isinstance(event, StartFailed):
            self._on_start_failed(event)
        elif isinstance(event, Starting):
            switching = self.controller.switching_to
            if switching is not None and switching.version == event.version:
                text = self.tr("Switching to {version}…").format(version=event.version)
            else:
                text = self.tr("Starting {version} ({source})…").format(version=event.version,
                                                                       source=source_text(event.source))
            self._show_runtime_state(event.state, text)
            self.starting_label.setText(text)
            if self.runtime_url is None:
                self.stack.setCurrentWidget(self.starting_page)
        elif isinstance(event, Crashed):
            if event.restart_in is not None:
                text = self.tr("The runtime stopped unexpectedly; restarting in {n} s").format(
                    n=max(1, round(event.restart_in)))
            else:
                text = self.tr("The runtime stopped unexpectedly")
            self._show_runtime_state(event.state, text)
        elif isinstance(event, Failed):
            self._show_failed(event)
        elif isinstance(event, Stopped):
            self._show_runtime_state(event.state, self.tr("Stopped"))
        self._update_actions()

    def _show_runtime_state(self, state: RuntimeState, text: str) -> None:
        self.runtime_label.setText(text)
        self.runtime_label.setProperty("state", state.value)
        self.state_dot.setProperty("state", state.value)
        self._paint_dot()

    def _paint_dot(self) -> None:
        state = self.state_dot.property("state")
        tone = STATE_TONES.get(RuntimeState(state)) if state else None
        self.state_dot.setStyleSheet(f"color: {state_dot_color(self.palette(), tone).name()};")

    def _show_runtime(self, url: str, token: str) -> None:
        self.runtime_url, self.runtime_token = url, token
        if self.web is not None and url:
            try:
                self.web.show_runtime(url, token)
            except ValueError as exc:
                self.url_label.setText(str(exc))
                self.stack.setCurrentWidget(self.panel_page)
                return
            self.stack.setCurrentWidget(self.web)
        else:
            self.url_label.setText(url or self.tr("(the runtime has no page)"))
            self.open_browser.setEnabled(bool(url))
            self.stack.setCurrentWidget(self.panel_page)

    def _on_start_failed(self, event: StartFailed) -> None:
        version, fallback = event.version, event.fallback
        self._show_runtime_state(event.state, self.tr("Version {version} couldn't start; starting {fallback}…").format(
            version=version, fallback=fallback))
        if event.damaged:
            text = self.tr("Its files were damaged on this computer, so it will be downloaded again. "
                           "Version {fallback} ({source}) is running instead.")
        elif event.marked_bad:
            text = self.tr("Version {fallback} ({source}) is running instead, and {version} won't be installed "
                           "again unless you allow it in Updates.")
        else:
            text = self.tr("Version {fallback} ({source}) is running instead.")
        text = text.format(version=version, fallback=fallback, source=source_text(event.fallback_source))
        title = self.tr("Version {version} couldn't start.").format(version=version)
        self.last_problem = (title, text, event.outcome.reason, event.outcome.stderr_tail)
        self.notify(Notice(Tone.WARNING, title, text, (
            Action(self.tr("Copy details"), self.copy_details, "copy-details"),
            Action(self.tr("Updates…"), self.show_updates, "show-updates")), key=f"start-failed:{version}"))

    def _show_failed(self, event: Failed) -> None:
        self.runtime_url = None
        if self.web is not None:
            self.web.clear()
        title = self.tr("The runtime couldn't start.")
        reason = event.message.splitlines()[0] if event.message else ""
        output = event.outcome.stderr_tail if event.outcome else ()
        self.error_title.setText(title)
        self.error_reason.setText(reason)
        self.error_log.setPlainText("\n".join(output) or self.tr("(no output)"))
        self.last_problem = (title, reason, event.message, tuple(output))
        self.stack.setCurrentWidget(self.failed_page)
        self._show_runtime_state(event.state, self.tr("The runtime couldn't start"))

    # -- updates -------------------------------------------------------------------------------
    def update_text(self, view: UpdateView) -> str:
        """The status line for `view`, in plain words."""
        return update_text(view)

    def on_update_changed(self, view: UpdateView) -> None:
        self.update_label.setText(self.update_text(view))
        self.update_label.setProperty("kind", view.state.value)
        working = view.state in (UpdateState.DOWNLOADING, UpdateState.INSTALLING)
        self.progress.setVisible(working)
        percent = view.transfer.percent if view.transfer else None
        if view.state is UpdateState.DOWNLOADING and percent is not None:
            self.progress.setRange(0, 100)
            self.progress.setValue(percent)
        elif working:
            self.progress.setRange(0, 0)
        self.cancel_button.setVisible(working or (view.state is UpdateState.CHECKING and view.manual))
        self._offer(view)
        self._update_actions()

    def _offer(self, view: UpdateView) -> None:
        """Show (once per version and kind) the banner that offers what the user can do now."""
        release = view.release
        if release is None or view.state not in (UpdateState.STAGED, UpdateState.AVAILABLE):
            notice = self.banner.notice
            if notice is not None and notice.key.startswith(("staged:", "available:")):
                self.banner.dismiss()
            return
        key = f"{view.state.value}:{release.version}"
        if key in self._dismissed or (self.banner.notice is not None and self.banner.notice.key == key):
            return
        if view.state is UpdateState.STAGED and self.banner.notice is not None \
                and self.banner.notice.key.startswith("app-ready:"):
            return  # restarting the app starts the staged runtime too: one offer is enough
        whats_new = Action(self.tr("What's new"), lambda: self.show_notes(release.version, view.notes), "whats-new")
        later = Action(self.tr("Later"), self.banner.dismiss, "later")
        if view.state is UpdateState.STAGED:
            self.notify(Notice(Tone.INFO, self.tr("Version {version} is ready.").format(version=release.version),
                               self.tr("Restart the runtime to use it now, or it will be used the next time the "
                                       "app starts."),
                               (Action(self.tr("Restart to update") if self.controller.running is not None
                                       else self.tr("Install now"), self.restart_to_update, "restart-to-update"),
                                whats_new, later), key=key))
        elif not self.controller.auto_update and not view.cancelled:
            self.notify(Notice(Tone.INFO, self.tr("Version {version} is available.").format(version=release.version),
                               self.tr("Automatic updates are off."),
                               (Action(self.tr("Download and install"), self.controller.download_and_install,
                                       "download-and-install"),
                                whats_new,
                                Action(self.tr("Skip this version"),
                                       lambda: self.controller.skip_version(release.version), "skip"),
                                later), key=key))

    def _on_check_finished(self, view: UpdateView) -> None:
        if view.state in (UpdateState.OFFLINE, UpdateState.FAILED) and view.problem is not None and self._asked:
            title = self.tr("Couldn't check for updates.")
            text = problem_text(view.problem)
            self.last_problem = (title, text, view.detail, ())
            self.notify(Notice(Tone.ERROR, title, text, (
                Action(self.tr("Try again"), self.check_now, "try-again"),
                Action(self.tr("Copy details"), self.copy_details, "copy-details")), key="check-failed"))
        self._asked = False

    # -- the app itself ----------------------------------------------------------------------------
    def on_app_changed(self, app: AppView) -> None:
        policy = app.policy
        self.policy_label.setVisible(policy.in_force)
        self.policy_label.setToolTip(plain_tip(policy.text))
        self.policy_label.setAccessibleName(policy.text)
        self._offer_app(app)
        self._update_actions()

    def _offer_app(self, app: AppView) -> None:
        """Say once per version that a new version of the app is ready, and offer the restart where one works."""
        pending = app.pending
        if pending is None:
            return
        key = f"app-ready:{pending}"
        if key in self._dismissed or (self.banner.notice is not None and self.banner.notice.key == key):
            return
        title = self.tr("Version {version} of the app is ready.").format(version=pending)
        if app.restart_exit_code is not None:
            self.notify(Notice(Tone.INFO, title, self.tr(
                "Restart the app to start using it. The runtime restarts with it; your notes and other data are "
                "kept."), (Action(self.tr("Restart to update"), self.restart_app, "restart-app"),
                          Action(self.tr("Later"), self.banner.dismiss, "later")), key=key))
        else:
            self.notify(Notice(Tone.INFO, title, self.tr("It is used the next time you start the app."), key=key))

    def restart_app(self) -> None:
        """Quit with the code that makes the launcher start the new version of the app at once."""
        code = self.controller.app.restart_exit_code
        if code is None:
            return
        self.request_quit(code)

    def _on_app_allowed(self, versions: tuple[str, ...]) -> None:
        if versions:
            self.statusBar().showMessage(self.tr("The app may use these versions again: {versions}").format(
                versions=", ".join(versions)), 8000)

    def check_now(self) -> None:
        """A check the user asked for: its outcome is shown, whatever it is."""
        if self.controller.check_now(manual=True):
            self._asked = True

    def restart_to_update(self) -> None:
        self.banner.dismiss()
        self.controller.restart_to_update()

    def _on_rollback_started(self, plan: RollbackReport) -> None:
        if self.banner.notice is not None:
            self.banner.dismiss()
        self._show_runtime_state(RuntimeState.STARTING, self.tr("Switching to {version}…").format(
            version=plan.version))

    def _on_rolled_back(self, report: RollbackReport) -> None:
        self.notify(Notice(
            Tone.SUCCESS, self.tr("Rolled back to {version}.").format(version=report.version),
            self.tr("Version {old} won't be installed again unless you allow it in Updates.").format(
                old=report.rolled_back),
            (Action(self.tr("Updates…"), self.show_updates, "show-updates"),), key="rolled-back"))

    def _on_skipped(self, version: Version) -> None:
        self.notify(Notice(Tone.INFO, self.tr("You won't be offered {version} again.").format(version=version),
                           self.tr("You can undo this here or in Updates."),
                           (Action(self.tr("Undo"), lambda: self.controller.allow_again(version), "undo-skip"),),
                           key=f"skipped:{version}"))

    def _on_allowed(self, report: object) -> None:
        cleared = getattr(report, "cleared", ())
        if cleared:
            self.statusBar().showMessage(self.tr("Allowed again: {versions}").format(versions=", ".join(cleared)),
                                         8000)
        notice = self.banner.notice
        if notice is not None and notice.key.startswith("skipped:"):
            self.banner.dismiss()

    def _on_whats_new(self, version: Version, notes: tuple[ReleaseInfo, ...]) -> None:
        self.last_whats_new = (version, notes)
        self.notify(Notice(Tone.SUCCESS, self.tr("Updated to {version}.").format(version=version),
                           self.tr("See what's new in this version."),
                           (Action(self.tr("What's new"), self.show_whats_new, "whats-new"),),
                           key=f"whats-new:{version}"))

    def _on_reminder(self, waiting: StagedWaiting) -> None:
        since = self.controller.clock() - waiting.since
        self._dismissed.discard(f"staged:{waiting.version}")
        self.notify(Notice(Tone.INFO, self.tr("Version {version} has been ready for {days}.").format(
            version=waiting.version, days=days_text(since)),
            self.tr("Restart the runtime when it suits you to start using it."),
            (Action(self.tr("Restart to update"), self.restart_to_update, "restart-to-update"),
             Action(self.tr("Later"), self.banner.dismiss, "later")), key=f"staged:{waiting.version}"))

    def _on_action_failed(self, what: str, problem: Problem, detail: str) -> None:
        title = self.tr("{what} didn't work.").format(what=what)
        text = problem_text(problem)
        self.last_problem = (title, text, detail, ())
        self.notify(Notice(Tone.ERROR, title, text,
                           (Action(self.tr("Copy details"), self.copy_details, "copy-details"),), key="failed"))

    def notify(self, notice: Notice) -> None:
        """Show `notice` in the banner (the newest replaces the one before) and in the tray."""
        self.banner.show_notice(notice)
        if self.tray is not None and not self.isVisible():
            self.tray.showMessage(notice.title, notice.text)

    def _update_actions(self) -> None:
        view = self.controller.view
        staged = view.state is UpdateState.STAGED
        self.restart_update_action.setEnabled(staged)
        self.restart_update_action.setVisible(staged)
        self.check_action.setEnabled(self.controller.can_check)
        restartable = self.controller.app.restart_exit_code is not None
        self.restart_app_action.setEnabled(restartable)
        self.restart_app_action.setVisible(restartable)
        self.rollback_action.setEnabled(self.controller.lists.rollback is not None)
        has_web = self.web is not None and self.stack.currentWidget() is self.web
        for action in (self.reload_action, self.zoom_in_action, self.zoom_out_action, self.zoom_reset_action):
            action.setEnabled(has_web)
        self.whats_new_action.setEnabled(self.last_whats_new is not None or view.release is not None)

    # -- the user's actions ------------------------------------------------------------------------
    def reload_page(self) -> None:
        """Ctrl+R / F5: reload the runtime's page; the runtime itself keeps running."""
        if self.web is not None and self.stack.currentWidget() is self.web:
            self.web.reload()

    def zoom(self, step: int) -> None:
        if self.web is None:
            return
        if step == 0:
            self.web.setZoomFactor(1.0)
            return
        current = self.web.zoomFactor()
        if step > 0:
            factor = next((z for z in ZOOM_STEPS if z > current + 1e-3), ZOOM_STEPS[-1])
        else:
            factor = next((z for z in reversed(ZOOM_STEPS) if z < current - 1e-3), ZOOM_STEPS[0])
        self.web.setZoomFactor(factor)

    def focus_banner(self) -> None:
        """F6: keyboard users reach the banner's buttons from anywhere, the page included."""
        page = self.stack.currentWidget()
        if not self.banner.focus_first() and page is not None:
            page.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def ask_roll_back(self) -> None:
        """Roll back, after saying exactly what will happen and getting a yes."""
        self.controller.preview_rollback(self._confirm_roll_back)

    def _confirm_roll_back(self, plan: RollbackReport | None) -> None:
        if plan is None:
            self._message(QMessageBox.Icon.Information, self.tr("Nothing to roll back"),
                          self.tr("The built-in runtime is in use; there is no earlier version to go back to."))
            return
        box = QMessageBox(QMessageBox.Icon.Question, self.tr("Roll back?"),
                          self.tr("Go back to version {version} ({source})?").format(
                              version=plan.version, source=source_text(plan.source)),
                          QMessageBox.StandardButton.NoButton, self.update_dialog if self.update_dialog and
                          self.update_dialog.isVisible() else self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setInformativeText(self.tr(
            "The runtime restarts with {version}. Version {old} will be marked as bad and won't be installed "
            "again unless you allow it in Updates. Your notes and other data are kept.").format(
                version=plan.version, old=plan.rolled_back))
        confirm = box.addButton(self.tr("Roll back"), QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.setEscapeButton(cancel)
        confirm.setObjectName("confirm-roll-back")

        def finished() -> None:
            if box.clickedButton() is confirm:
                self.controller.roll_back(plan)
            self.message_box = None
        box.finished.connect(finished)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        self.message_box = box
        box.open()

    def copy_details(self) -> None:
        """Put what a support person needs on the clipboard: versions, what happened, reason, log tail."""
        title, text, detail, output = self.last_problem or ("", "", "", ())
        running = self.controller.running
        QGuiApplication.clipboard().setText(details_text(
            app_version=__version__, runtime=f"{running.version} ({running.source})" if running else "-",
            what=f"{title} {text}".strip(), reason=detail, output=output,
            log=self.controller.config.data.logs_dir / "desktop.log"))
        self.statusBar().showMessage(self.tr("Details copied to the clipboard"), 5000)

    def _message(self, icon: QMessageBox.Icon, title: str, text: str, detail: str = "") -> QMessageBox:
        box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # paths and addresses are shown, never interpreted
        if detail:
            box.setInformativeText(detail)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        self.message_box = box
        box.open()
        return box

    def open_data_folder(self) -> None:
        path = str(self.controller.config.data.root)
        if self.opener(QUrl.fromLocalFile(path)):
            return
        box = self._message(QMessageBox.Icon.Information, self.tr("No file manager"),
                            self.tr("No file manager could be opened on this computer."),
                            self.tr("The data folder is:\n{path}").format(path=path))
        copy = box.addButton(self.tr("Copy path"), QMessageBox.ButtonRole.ActionRole)
        copy.clicked.disconnect()
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(path))

    def _open_in_browser(self) -> None:
        if self.runtime_url:
            self.opener(login_url(self.runtime_url, self.runtime_token))

    # -- windows -------------------------------------------------------------------------------
    def show_updates(self) -> UpdateDialog:
        if self.update_dialog is None:
            self.update_dialog = UpdateDialog(self.controller, self)
            self.update_dialog.roll_back_requested.connect(self.ask_roll_back)
            self.update_dialog.restart_app_requested.connect(self.restart_app)
            self.update_dialog.copy_details_requested.connect(self._copy_update_details)
            self.update_dialog.notes_requested.connect(lambda: self.show_notes(
                self.controller.view.release.version if self.controller.view.release else None,
                self.controller.view.notes))
        self.controller.refresh_lists()
        self.controller.refresh_app()
        self.update_dialog.refresh()
        self.update_dialog.show()
        self.update_dialog.raise_()
        self.update_dialog.activateWindow()
        return self.update_dialog

    def _copy_update_details(self) -> None:
        view = self.controller.view
        if view.problem is not None:
            self.last_problem = (self.tr("Update problem."), problem_text(view.problem), view.detail, ())
        self.copy_details()

    def show_notes(self, version: Version | None, notes: tuple[ReleaseInfo, ...]) -> WhatsNewDialog:
        if self.whats_new_dialog is None:
            self.whats_new_dialog = WhatsNewDialog(self)
        self.whats_new_dialog.show_releases(version, notes)
        self.whats_new_dialog.show()
        self.whats_new_dialog.raise_()
        return self.whats_new_dialog

    def show_whats_new(self) -> WhatsNewDialog:
        if self.last_whats_new is not None:
            if self.banner.notice is not None and self.banner.notice.key.startswith("whats-new:"):
                self.banner.dismiss()
            return self.show_notes(*self.last_whats_new)
        view = self.controller.view
        return self.show_notes(view.release.version if view.release else None, view.notes)

    def show_logs(self) -> LogsDialog:
        if self.logs_dialog is None:
            self.logs_dialog = LogsDialog(self.controller.config.data.logs_dir, self)
        self.logs_dialog.show()
        self.logs_dialog.raise_()
        return self.logs_dialog

    def settings_dialog(self) -> SettingsDialog:
        return SettingsDialog(self.controller.config.settings, self.tray is not None, self, app=self.controller.app)

    def show_settings(self) -> SettingsDialog:
        dialog = self.settings_dialog()
        dialog.accepted.connect(lambda: self.controller.apply_settings(dialog.result_settings()))
        dialog.open()
        return dialog

    def show_about(self) -> QMessageBox:
        config = self.controller.config
        running = self.controller.running
        runtime = (f"{running.version} ({source_text(running.source)})" if running else self.tr("not running"))
        text = self.tr("Desktop Shell {version}").format(version=__version__)
        detail = self.tr("Runtime: {runtime}\nData folder: {data}\nUpdate server: {server} ({kind}, channel {channel})"
                         ).format(runtime=runtime, data=config.data.root,
                                  server=self.controller.shell.registry_display or self.tr("none"),
                                  kind=config.registry_kind, channel=config.channel)
        app = self.controller.app
        if app.info is not None:
            detail += "\n" + self.tr("App updates: {text}").format(text=app_updates_text(app))
        if app.policy.in_force:
            detail += "\n" + app.policy.text
        return self._message(QMessageBox.Icon.Information, self.tr("About"), text, detail)

    def about_text(self) -> str:
        box = self.message_box
        return f"{box.text()}\n{box.informativeText()}" if box is not None else ""

    def bring_to_front(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._paint_dot()

    # -- closing -------------------------------------------------------------------------------
    def request_quit(self, exit_code: int = 0) -> None:
        """Quit (the window goes at once, `quit_requested(exit_code)` follows once the runtime is stopped)."""
        if not self._quitting:
            self.exit_code = exit_code
        self._quitting = True
        self.close()

    def _finish_quit(self) -> None:
        self.quit_requested.emit(self.exit_code)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._quitting and self.tray is not None and self.controller.config.settings.close_to_tray:
            self.hide()
            event.ignore()
            if not self._hinted:
                self._hinted = True
                self.tray.showMessage(self.tr("Still running"),
                                      self.tr("The app keeps running in the tray. To quit, use Quit in the tray "
                                              "icon's menu."),
                                      self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxInformation))
                self.tray_hint_shown.emit()
            return
        self._quitting = True
        for dialog in (self.update_dialog, self.logs_dialog, self.whats_new_dialog, self.message_box):
            if dialog is not None:
                dialog.close()
        self.hide()
        if self.tray is not None:
            self.tray.hide()
        self.controller.shutdown()
        QTimer.singleShot(QUIT_FALLBACK_MS, self, self._finish_quit)
        event.accept()

