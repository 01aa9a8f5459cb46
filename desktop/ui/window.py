"""The main window: the runtime's UI, a status bar, menus and the tray icon."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from desktop import __version__
from desktop.core.results import RuntimeState
from desktop.ui.controller import ShellController
from desktop.ui.dialogs import LogsDialog, SettingsDialog, UpdateDialog
from desktop.ui.webview import login_url, make_view, open_external

STATE_TEXT = {
    RuntimeState.STOPPED.value: "Stopped",
    RuntimeState.STARTING.value: "Starting…",
    RuntimeState.RUNNING.value: "Running",
    RuntimeState.CRASHED.value: "Crashed — restarting",
    RuntimeState.FAILED.value: "Failed",
}
STATE_COLOR = {"stopped": "#888", "starting": "#c90", "running": "#2a2", "crashed": "#d60", "failed": "#c22"}


def _page(*widgets: QWidget, margin: int = 40) -> QWidget:
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

    quit_requested = Signal()

    def __init__(self, controller: ShellController, icon: QIcon | None = None) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("Notes — Desktop Shell")
        if icon is not None:
            self.setWindowIcon(icon)
        self.resize(1000, 700)
        self.runtime_url: str | None = None
        self.runtime_token = ""
        self.update_dialog: UpdateDialog | None = None
        self.logs_dialog: LogsDialog | None = None
        self._quitting = False

        self.stack = QStackedWidget()
        self.starting_label = QLabel("Starting the runtime…")
        self.starting_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.starting_page = _page(self.starting_label)
        self.web = make_view()
        self.url_label = QLabel()
        self.url_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_browser = QPushButton("Open in browser")
        self.open_browser.clicked.connect(self._open_in_browser)
        browser_row = QHBoxLayout()
        browser_row.addStretch(1)
        browser_row.addWidget(self.open_browser)
        browser_row.addStretch(1)
        row = QWidget()
        row.setLayout(browser_row)
        self.panel_page = _page(QLabel("The runtime is running. Its interface opens in your browser:"),
                                self.url_label, row)
        self.error_title = QLabel()
        self.error_title.setWordWrap(True)
        self.error_title.setStyleSheet("font-size: 15px; font-weight: bold; color: #b22;")
        self.error_log = QPlainTextEdit()
        self.error_log.setReadOnly(True)
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.controller.restart_runtime)
        self.failed_page = _page(self.error_title, QLabel("Last lines of its output:"), self.error_log,
                                 self.retry_button, margin=24)
        for page in (self.starting_page, self.panel_page, self.failed_page):
            self.stack.addWidget(page)
        if self.web is not None:
            self.stack.addWidget(self.web)
        self.banner = QFrame()
        self.banner.setObjectName("banner")
        self.banner_text = QLabel()
        self.banner_text.setWordWrap(True)
        self.banner_restart = QPushButton("Restart to update")
        self.banner_restart.clicked.connect(self._restart_to_update)
        self.banner_details = QPushButton("Details…")
        self.banner_details.clicked.connect(self.show_updates)
        self.banner_close = QPushButton("✕")
        self.banner_close.setFlat(True)
        self.banner_close.setFixedWidth(32)
        self.banner_close.clicked.connect(self.banner.hide)
        banner_row = QHBoxLayout(self.banner)
        banner_row.setContentsMargins(12, 6, 6, 6)
        banner_row.addWidget(self.banner_text, 1)
        for button in (self.banner_restart, self.banner_details, self.banner_close):
            banner_row.addWidget(button)
        self.banner.hide()
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.banner)
        column.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.runtime_label = QLabel()
        self.update_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.statusBar().addWidget(self.runtime_label, 1)
        self.statusBar().addPermanentWidget(self.update_label)
        self.statusBar().addPermanentWidget(self.progress)

        self._build_actions()
        self.tray = self._build_tray(icon)
        controller.runtime_changed.connect(self.on_runtime_changed)
        controller.update_changed.connect(self.on_update_changed)
        controller.progress_changed.connect(self.on_progress)
        controller.notification.connect(self.on_notification)
        self.on_runtime_changed(RuntimeState.STARTING.value, {})
        self.on_update_changed(controller.update_kind, controller.update_text)

    # -- actions and menus --------------------------------------------------------------
    def _build_actions(self) -> None:
        c = self.controller

        def action(text: str, slot: Any, shortcut: str | None = None) -> QAction:
            act = QAction(text, self)
            act.triggered.connect(slot)
            if shortcut:
                act.setShortcut(shortcut)
            return act

        self.check_action = action("Check for updates now", lambda: c.check_now(manual=True))
        self.updates_action = action("Updates…", self.show_updates, "Ctrl+U")
        self.restart_action = action("Restart runtime", c.restart_runtime, "Ctrl+R")
        self.data_action = action("Open data folder", self._open_data_folder)
        self.logs_action = action("Open logs", self.show_logs, "Ctrl+L")
        self.settings_action = action("Settings…", self.show_settings, "Ctrl+,")
        self.about_action = action("About", self.show_about)
        self.quit_action = action("Quit", self.request_quit, "Ctrl+Q")
        app_menu = self.menuBar().addMenu("&App")
        for act in (self.check_action, self.updates_action, self.restart_action, None, self.data_action,
                    self.logs_action, self.settings_action, None, self.about_action, None, self.quit_action):
            if act is None:
                app_menu.addSeparator()
            else:
                app_menu.addAction(act)

    def _build_tray(self, icon: QIcon | None) -> QSystemTrayIcon | None:
        if not QSystemTrayIcon.isSystemTrayAvailable() or icon is None:
            return None
        tray = QSystemTrayIcon(icon, self)
        menu = QMenu(self)
        show = QAction("Show window", self)
        show.triggered.connect(self.bring_to_front)
        menu.addAction(show)
        for act in (self.check_action, self.restart_action, self.data_action, self.logs_action,
                    self.settings_action, self.about_action, self.quit_action):
            menu.addAction(act)
        tray.setContextMenu(menu)
        tray.activated.connect(lambda reason: self.bring_to_front())
        tray.show()
        return tray

    # -- rendering ------------------------------------------------------------------------
    def on_runtime_changed(self, state: str, info: dict[str, Any]) -> None:
        text = STATE_TEXT.get(state, state)
        version = info.get("version")
        source = info.get("source")
        if state == RuntimeState.RUNNING.value:
            text = f"Running {version} ({source})"
            self._show_runtime(str(info.get("url") or ""), str(info.get("token") or ""))
        elif state == RuntimeState.STARTING.value and info.get("failed_version"):
            text = (f"{info['failed_version']} crashed at startup ({info.get('reason')}) — marked bad, "
                    f"starting {info.get('fallback')} ({info.get('fallback_source')})")
            self.starting_label.setText(text)
            self.stack.setCurrentWidget(self.starting_page)
        elif state == RuntimeState.STARTING.value:
            self.starting_label.setText("Starting the runtime…")
            if self.runtime_url is None:
                self.stack.setCurrentWidget(self.starting_page)
        elif state == RuntimeState.CRASHED.value:
            text = f"Crashed ({info.get('reason')}) — restarting"
        elif state == RuntimeState.FAILED.value:
            self.error_title.setText(str(info.get("error") or "The runtime failed").splitlines()[0])
            tail = info.get("stderr_tail") or []
            self.error_log.setPlainText("\n".join(str(x) for x in tail) or "(no output)")
            self.stack.setCurrentWidget(self.failed_page)
            self.runtime_url = None
        color = STATE_COLOR.get(state, "#888")
        self.runtime_label.setText(f"<span style='color:{color}'>●</span> Runtime: {text}")
        self.runtime_label.setProperty("state", state)

    def _show_runtime(self, url: str, token: str) -> None:
        self.runtime_url, self.runtime_token = url, token
        if self.web is not None and url:
            self.web.show_runtime(url, token)
            self.stack.setCurrentWidget(self.web)
        else:
            self.url_label.setText(f"<a href='{url}'>{url}</a>")
            self.stack.setCurrentWidget(self.panel_page)

    def on_update_changed(self, kind: str, text: str) -> None:
        self.update_label.setText(f"Updates: {text}")
        self.update_label.setProperty("kind", kind)
        self.progress.setVisible(kind == "downloading")

    def on_progress(self, pct: int) -> None:
        if pct < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(pct)

    def on_notification(self, title: str, message: str) -> None:
        self.show_banner(f"<b>{title}.</b> {message}", kind="warning" if "not start" in title else "info",
                         restart=self.controller.staged is not None)
        if self.tray is not None:
            self.tray.showMessage(title, message)

    def show_banner(self, html: str, *, kind: str = "info", restart: bool = False) -> None:
        colors = {"info": ("#e8f0fe", "#1a4fb4"), "warning": ("#fff4e5", "#8a4b00")}
        background, border = colors.get(kind, colors["info"])
        self.banner.setStyleSheet(f"#banner {{ background: {background}; border-bottom: 2px solid {border}; }}")
        self.banner_text.setText(html)
        self.banner_restart.setVisible(restart)
        self.banner.show()

    def _restart_to_update(self) -> None:
        self.banner.hide()
        self.controller.restart_to_update()

    # -- windows ------------------------------------------------------------------------
    def show_updates(self) -> UpdateDialog:
        if self.update_dialog is None:
            self.update_dialog = UpdateDialog(self.controller, self)
        self.update_dialog.refresh()
        self.update_dialog.show()
        self.update_dialog.raise_()
        return self.update_dialog

    def show_logs(self) -> LogsDialog:
        if self.logs_dialog is None:
            self.logs_dialog = LogsDialog(self.controller.config.data.logs_dir, self)
        self.logs_dialog.show()
        self.logs_dialog.raise_()
        return self.logs_dialog

    def settings_dialog(self) -> SettingsDialog:
        return SettingsDialog(self.controller.config.settings, self.tray is not None, self)

    def show_settings(self) -> None:
        dialog = self.settings_dialog()
        if dialog.exec():
            self.controller.apply_settings(dialog.result_settings())

    def show_about(self) -> None:
        QMessageBox.about(self, "About", self.about_text())

    def about_text(self) -> str:
        config = self.controller.config
        return (f"<b>Desktop Shell</b> {__version__}<br>Runtime: {self.controller.current_version()}<br>"
                f"Data folder: {config.data.root}<br>Update feed: {self.controller.shell.registry_display or 'none'} "
                f"({config.registry_kind}, channel {config.channel})")

    def _open_data_folder(self) -> None:
        open_external(QUrl.fromLocalFile(str(self.controller.config.data.root)))

    def _open_in_browser(self) -> None:
        if self.runtime_url:
            open_external(login_url(self.runtime_url, self.runtime_token))

    def bring_to_front(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    # -- closing ------------------------------------------------------------------------
    def request_quit(self) -> None:
        self._quitting = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._quitting and self.tray is not None and self.controller.config.settings.close_to_tray:
            self.hide()
            event.ignore()
            return
        self.statusBar().showMessage("Stopping the runtime…")
        QApplication.processEvents()
        self.controller.shutdown()
        event.accept()
        self.quit_requested.emit()
