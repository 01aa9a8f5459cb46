"""The Updates panel, settings, logs and release notes: dialogs that render the controller's state.

No button here is a default button and none presses itself on Enter: a keyboard user who checks
for updates and presses Enter again must never trigger anything else (Roll back least of all).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from packaging.version import Version
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.core.results import ReleaseInfo, UpdateState
from desktop.core.shell import Settings, one_line
from desktop.ui.app_section import AppSection
from desktop.ui.controller import AppView, Lists, ShellController, UpdateView
from desktop.ui.richtext import NotesBrowser
from desktop.ui.widgets import no_default, plain_label, plain_tip, version_list
from desktop.ui.wording import app_updates_text, problem_text, source_text, transfer_text, update_text, when_text

CHANNELS = ("stable", "beta", "alpha")
LOG_TAIL_BYTES = 16 * 1024
LOG_TAIL_LINES = 30
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")  # the OS's words stay, its numbers go


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a log file (at most LOG_TAIL_BYTES read), or [] when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    return [one_line(line, 500) for line in data.decode("utf-8", "replace").splitlines()[-lines:]]


def details_text(*, app_version: str, runtime: str, what: str, reason: str, output: Sequence[str],
                 log: Path) -> str:
    """What "Copy details" puts on the clipboard for a support request (plain text)."""
    parts = [f"Desktop Shell {app_version}", f"Runtime: {runtime}", f"What happened: {what}"]
    if reason:
        parts.append(f"Reason: {_ERRNO.sub('', one_line(reason, 2000))}")
    if output:
        parts += ["", "Runtime output (last lines):", *(one_line(line, 500) for line in output)]
    tail = log_tail(log)
    if tail:
        parts += ["", f"{log.name} (last lines):", *tail]
    return "\n".join(parts) + "\n"


class UpdateDialog(QDialog):
    """Current and available versions, progress, the update choices, roll back, and what is not offered."""

    roll_back_requested = Signal()
    copy_details_requested = Signal()
    notes_requested = Signal()
    restart_app_requested = Signal()

    def __init__(self, controller: ShellController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle(self.tr("Updates"))
        em = self.fontMetrics().height()
        self.setMinimumWidth(em * 34)
        self.policy = plain_label()
        self.policy.setObjectName("policy")
        self.current = plain_label()
        self.state = plain_label()
        self.state.setObjectName("update-state")
        # Where focus goes when the button that had it goes busy: the words that say what is
        # happening (a screen reader reads them), and nothing that Enter could press.
        self.state.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                           | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.state.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.checked = plain_label()
        self.problem = plain_label()
        self.copy_button = QPushButton(self.tr("Copy details"))
        self.copy_button.clicked.connect(self.copy_details_requested)
        problem_row = QHBoxLayout()
        problem_row.addWidget(self.problem, 1)
        problem_row.addWidget(self.copy_button)
        self.problem_box = QWidget()
        self.problem_box.setLayout(problem_row)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setAccessibleName(self.tr("Download progress"))
        self.progress_text = plain_label()
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.clicked.connect(controller.cancel_download)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        progress_column = QVBoxLayout()
        progress_column.addLayout(progress_row)
        progress_column.addWidget(self.progress_text)
        self.progress_box = QWidget()
        self.progress_box.setLayout(progress_column)

        self.notes_title = plain_label()
        self.notes = NotesBrowser()
        self.notes.setAccessibleName(self.tr("Release notes"))
        self.notes.setMinimumHeight(em * 8)

        self.check_button = QPushButton(self.tr("Check now"))
        self.check_button.setObjectName("check-now")
        self.primary_button = QPushButton()
        self.primary_button.setObjectName("primary")
        self.skip_button = QPushButton(self.tr("Skip this version"))
        self.rollback_button = QPushButton(self.tr("Roll back…"))
        self.rollback_button.setToolTip(self.tr("Go back to the previous version (asks first)"))

        self.blocked = version_list([self.tr("Version"), self.tr("Why it is not offered"), self.tr("Since")],
                                    self.tr("Versions that are not offered"))
        self.allow_button = QPushButton(self.tr("Allow again"))
        self.allow_button.setToolTip(self.tr("Offer the selected versions again (undoes a skip or a bad mark)"))
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        close.button(QDialogButtonBox.StandardButton.Close).setText(self.tr("Close"))

        form = QFormLayout()
        form.addRow(self.tr("Running:"), self.current)
        form.addRow(self.tr("Status:"), self.state)
        form.addRow(self.tr("Last checked:"), self.checked)
        buttons = QHBoxLayout()
        for button in (self.check_button, self.primary_button, self.skip_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.rollback_button)
        blocked_box = QGroupBox(self.tr("Not offered"))
        blocked_layout = QVBoxLayout(blocked_box)
        blocked_layout.addWidget(self.blocked)
        allow_row = QHBoxLayout()
        allow_row.addStretch(1)
        allow_row.addWidget(self.allow_button)
        blocked_layout.addLayout(allow_row)
        self.app = AppSection(controller)
        self.app.restart_requested.connect(self.restart_app_requested)
        layout = QVBoxLayout(self)
        layout.addWidget(self.policy)
        layout.addLayout(form)
        layout.addWidget(self.problem_box)
        layout.addWidget(self.progress_box)
        layout.addWidget(self.notes_title)
        layout.addWidget(self.notes, 2)
        layout.addLayout(buttons)
        layout.addWidget(blocked_box, 1)
        layout.addWidget(self.app)
        layout.addWidget(close)
        no_default(self.copy_button, self.cancel_button, self.check_button, self.primary_button, self.skip_button,
                    self.rollback_button, self.allow_button, *close.buttons())

        self.check_button.clicked.connect(self._check)
        self.primary_button.clicked.connect(self._primary)
        self.skip_button.clicked.connect(self._skip)
        self.rollback_button.clicked.connect(self.roll_back_requested)
        self.allow_button.clicked.connect(self._allow_selected)
        self.blocked.itemSelectionChanged.connect(self._selection_changed)
        controller.update_changed.connect(lambda view: self.refresh())
        controller.lists_changed.connect(lambda lists: self.refresh())
        controller.runtime_event.connect(lambda event: self.refresh())
        controller.app_changed.connect(lambda app: self.refresh())
        controller.rolled_back.connect(self._on_rolled_back)
        self._notes_key: tuple[object, ...] | None = None
        self._lists: Lists | None = None
        self.note = ""
        self.refresh()

    # -- actions -------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.controller.check_now(manual=True):
            self._keep_focus_safe()

    def _primary(self) -> None:
        view = self.controller.view
        if view.state is UpdateState.STAGED:
            self.controller.restart_to_update()
        elif view.state is UpdateState.AVAILABLE:
            self.controller.download_and_install()
            self._keep_focus_safe()
        elif view.state in (UpdateState.DOWNLOADING, UpdateState.INSTALLING, UpdateState.CHECKING):
            self.controller.cancel_download()

    def _skip(self) -> None:
        release = self.controller.view.release
        if release is not None:
            self.controller.skip_version(release.version)

    def _keep_focus_safe(self) -> None:
        """A button that goes disabled hands focus to its neighbour (Roll back): give it to the status."""
        self.state.setFocus(Qt.FocusReason.OtherFocusReason)

    def _allow_selected(self) -> None:
        for item in self.blocked.selectedItems():
            self.controller.allow_again(item.text(0))

    def _selection_changed(self) -> None:
        self.allow_button.setEnabled(bool(self.blocked.selectedItems()))

    def _on_rolled_back(self, report: object) -> None:
        self.note = self.tr("Rolled back to {version}. Version {old} won't be installed again unless you allow it "
                            "below.").format(version=getattr(report, "version", ""),
                                             old=getattr(report, "rolled_back", ""))
        self.refresh()

    # -- rendering -----------------------------------------------------------------------------
    def status_text(self, view: UpdateView) -> str:
        text = update_text(view, checked=False)  # the panel says when on a line of its own
        if self.note and view.state in (UpdateState.IDLE, UpdateState.UP_TO_DATE):
            return f"{self.note}\n{text}"
        return text

    def refresh(self) -> None:
        had_focus = QApplication.focusWidget()
        self._render()
        if had_focus in (self.check_button, self.primary_button, self.skip_button, self.allow_button) \
                and not (had_focus.isVisible() and had_focus.isEnabled()):
            self._keep_focus_safe()

    def _render(self) -> None:
        controller = self.controller
        view = controller.view
        lists = controller.lists
        running = controller.running
        switching = controller.switching_to
        if switching is not None:
            self.current.setText(self.tr("switching to {version}…").format(version=switching.version))
        elif running is not None:
            self.current.setText(self.tr("{version} ({source})").format(version=running.version,
                                                                     source=source_text(running.source)))
        else:
            self.current.setText(self.tr("not running"))
        self.state.setText(self.status_text(view))
        policy = controller.app.policy
        self.policy.setVisible(policy.in_force)
        self.policy.setText(policy.text)
        self.checked.setText(when_text(view.last_checked) if view.last_checked else self.tr("never"))
        self.problem_box.setVisible(view.problem is not None and view.state in (UpdateState.OFFLINE,
                                                                                UpdateState.FAILED))
        if view.problem is not None:
            self.problem.setText(problem_text(view.problem))

        working = view.state in (UpdateState.DOWNLOADING, UpdateState.INSTALLING)
        self.progress_box.setVisible(working)
        percent = view.transfer.percent if view.transfer else None
        if view.state is UpdateState.DOWNLOADING and percent is not None:
            self.progress.setRange(0, 100)
            self.progress.setValue(percent)
        elif working:
            self.progress.setRange(0, 0)
        if working:
            self.progress_text.setText(transfer_text(view.transfer) if view.state is UpdateState.DOWNLOADING
                                       else self.tr("Installing…"))

        release = view.release
        self._render_notes(view)
        self.check_button.setEnabled(controller.can_check)
        self.check_button.setText(self.tr("Checking…") if view.state is UpdateState.CHECKING else self.tr("Check now"))
        primary = {UpdateState.STAGED: self.tr("Restart to update") if running is not None else self.tr("Install now"),
                   UpdateState.AVAILABLE: self.tr("Download and install")}.get(view.state)
        self.primary_button.setVisible(primary is not None and release is not None)
        if primary is not None:
            self.primary_button.setText(primary)
        self.skip_button.setVisible(view.state is UpdateState.AVAILABLE and release is not None)
        self.rollback_button.setEnabled(lists.rollback is not None and switching is None)
        if lists is not self._lists:
            self._lists = lists
            self._render_blocked(lists)

    def _render_notes(self, view: UpdateView) -> None:
        release = view.release
        key = (view.state, release.version if release else None, view.notes)
        if key == self._notes_key:
            return
        self._notes_key = key
        self.notes.setVisible(release is not None)
        if release is None:
            self.notes_title.setText(self.tr("No update is waiting."))
            self.notes.clear()
            return
        self.notes_title.setText(self.tr("What's new in {version}:").format(version=release.version))
        self.notes.show_releases(view.notes or (release,))

    def _render_blocked(self, lists: Lists) -> None:
        self.blocked.clear()
        rows: list[tuple[str, str, str, str]] = []
        for entry in lists.bad:
            reason = one_line(entry.reason, 200)
            why = (self.tr("rolled back by you") if entry.reason == "rolled back by user"
                   else self.tr("didn't start ({reason})").format(reason=reason))
            rows.append((str(entry.version), why, self._when(entry.time), "\n".join(entry.stderr_tail) or reason))
        for block in lists.blocked:
            why = (self.tr("skipped by you") if block.store == "skipped by the user"
                   else self.tr("broken release: {reason}").format(reason=one_line(block.reason, 200)))
            rows.append((str(block.version), why, self._when(block.time), one_line(block.reason, 500)))
        for version, why, when, tip in sorted(rows, key=lambda r: Version(r[0]), reverse=True):
            item = QTreeWidgetItem([version, why, when])
            item.setToolTip(1, plain_tip(tip))  # the runtime's own output: shown, never interpreted
            self.blocked.addTopLevelItem(item)
        self.blocked.resizeColumnToContents(0)
        self.allow_button.setEnabled(bool(self.blocked.selectedItems()))

    @staticmethod
    def _when(epoch: float) -> str:
        return when_text(epoch) if epoch else ""


class WhatsNewDialog(QDialog):
    """Release notes of every version an update passes over, as safe rich text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        em = self.fontMetrics().height()
        self.resize(em * 32, em * 24)
        self.heading = plain_label()
        font = self.heading.font()
        font.setBold(True)
        self.heading.setFont(font)
        self.browser = NotesBrowser()
        self.browser.setAccessibleName(self.tr("Release notes"))
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.button(QDialogButtonBox.StandardButton.Close).setText(self.tr("Close"))
        close.rejected.connect(self.reject)
        no_default(*close.buttons())
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.browser, 1)
        layout.addWidget(close)

    def show_releases(self, version: Version | None, releases: Sequence[ReleaseInfo]) -> None:
        title = (self.tr("What's new in {version}").format(version=version) if version is not None
                 else self.tr("What's new"))
        self.setWindowTitle(title)
        self.heading.setText(title)
        self.browser.show_releases(releases)


class SettingsDialog(QDialog):
    """Update channel, automatic updates, check interval, close-to-tray; what the admin policy decides instead."""

    def __init__(self, settings: Settings, tray_available: bool, parent: QWidget | None = None, *,
                 app: AppView | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("Settings"))
        self.original = settings
        policy = app.policy if app is not None else None
        self.pinned = policy.channel if policy is not None else None
        shown = self.pinned or settings.channel
        self.channel = QComboBox()
        self.channel.setEditable(False)  # a channel is one the feed publishes, not free text
        names = {"stable": self.tr("Stable"), "beta": self.tr("Beta (earlier, less tested)"),
                 "alpha": self.tr("Alpha (earliest, for testers)")}
        channels = list(CHANNELS) + ([shown] if shown not in CHANNELS else [])
        for channel in channels:
            self.channel.addItem(names.get(channel, channel), channel)
        self.channel.setCurrentIndex(channels.index(shown))
        self.channel.setAccessibleName(self.tr("Update channel"))
        if self.pinned is not None:
            self.channel.setEnabled(False)
            self.channel.setToolTip(self.tr("Set by your administrator"))
        self.auto_update = QCheckBox(self.tr("Download and install updates automatically"))
        self.auto_update.setChecked(settings.auto_update)
        self.interval = QSpinBox()
        self.interval.setRange(1, 7 * 24 * 60)
        self.interval.setSuffix(self.tr(" min"))
        self.interval.setValue(max(1, int(settings.check_interval_s // 60)))
        self.interval.setAccessibleName(self.tr("Check every (minutes)"))
        self.close_to_tray = QCheckBox(self.tr("Closing the window keeps the app running in the tray"))
        self.close_to_tray.setChecked(settings.close_to_tray and tray_available)
        self.close_to_tray.setEnabled(tray_available)
        if policy is not None and not policy.runtime_updates and not (app is not None and app.updatable):
            for control in (self.channel, self.auto_update, self.interval):  # nothing they could change
                control.setEnabled(False)
        self.policy = plain_label(policy.text if policy is not None else "")
        self.policy.setObjectName("policy")
        self.policy.setVisible(policy is not None and policy.in_force)
        self.app_updates = plain_label(app_updates_text(app) if app is not None else "")
        self.app_updates.setObjectName("app-updates")
        form = QFormLayout()
        form.addRow(self.tr("Update channel:"), self.channel)
        form.addRow("", self.auto_update)
        form.addRow(self.tr("Check every:"), self.interval)
        form.addRow("", self.close_to_tray)
        if self.app_updates.text():
            form.addRow(self.tr("App updates:"), self.app_updates)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText(self.tr("OK"))
        buttons.button(QDialogButtonBox.StandardButton.Cancel).setText(self.tr("Cancel"))
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.policy)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def result_settings(self) -> Settings:
        # A channel the admin pinned is not the user's choice: their own stays saved for when it is lifted.
        channel = self.original.channel if self.pinned is not None else str(self.channel.currentData())
        return replace(self.original, channel=channel,
                       auto_update=self.auto_update.isChecked(),
                       check_interval_s=float(self.interval.value() * 60),
                       close_to_tray=self.close_to_tray.isChecked())


class LogTail(QPlainTextEdit):
    """A live, read-only tail of a log file (follows appends and rotation), never scrolled sideways."""

    def __init__(self, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.offset = 0
        self._shown = False
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.poll)
        self.timer.start(500)
        self.poll()

    def poll(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self.offset:  # rotated
            self.offset = 0
            self.clear()
        if size == self.offset:
            return
        start = max(self.offset, size - 256 * 1024) if self.offset == 0 else self.offset
        try:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                data = handle.read(min(size - start, 1024 * 1024))
        except OSError:
            return
        self.offset = start + len(data)
        vertical, horizontal = self.verticalScrollBar(), self.horizontalScrollBar()
        following = not self.isVisible() or vertical.value() >= vertical.maximum() - 2
        left = horizontal.value() if self.isVisible() else 0
        self.appendPlainText(data.decode("utf-8", "replace").rstrip("\n"))
        # appendPlainText moves the view to the end of the last line: keep the user's column
        # (the start of the lines unless they scrolled), and follow new lines only at the bottom.
        self._place(left, following)

    def _place(self, left: int, bottom: bool) -> None:
        if bottom:
            self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())
        self.horizontalScrollBar().setValue(left)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown:  # laid out only once shown: open at the newest lines, at their start
            self._shown = True
            QTimer.singleShot(0, self, lambda: self._place(0, True))


class LogsDialog(QDialog):
    def __init__(self, logs_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("Logs"))
        em = self.fontMetrics().height()
        self.resize(em * 56, em * 30)
        self.tabs = tabs = QTabWidget()
        self.runtime_log = LogTail(logs_dir / "runtime.log")
        self.shell_log = LogTail(logs_dir / "desktop.log")
        self.runtime_log.setAccessibleName(self.tr("Runtime output"))
        self.shell_log.setAccessibleName(self.tr("Updater and shell"))
        tabs.addTab(self.runtime_log, self.tr("Runtime output"))
        tabs.addTab(self.shell_log, self.tr("Updater and shell"))
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        self.setWindowFlag(Qt.WindowType.WindowMaximizeButtonHint, True)
