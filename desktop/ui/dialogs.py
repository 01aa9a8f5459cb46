"""Update panel, settings and logs: dialogs that render the controller's state."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.core.shell import Settings
from desktop.ui.controller import ShellController

CHANNELS = ("stable", "beta", "alpha")


class UpdateDialog(QDialog):
    """Current and available versions, progress, restart/roll back, and the bad-version list."""

    def __init__(self, controller: ShellController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("Updates")
        self.setMinimumWidth(520)
        self.current = QLabel()
        self.available = QLabel("—")
        self.state = QLabel()
        self.state.setWordWrap(True)
        self.notes = QTextBrowser()
        self.notes.setMaximumHeight(90)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.check_button = QPushButton("Check now")
        self.restart_button = QPushButton("Restart to update")
        self.rollback_button = QPushButton("Roll back")
        self.bad = QTreeWidget()
        self.bad.setHeaderLabels(["Bad version", "Reason", "When"])
        self.bad.setRootIsDecorated(False)
        self.clear_button = QPushButton("Clear selected")

        form = QFormLayout()
        form.addRow("Running:", self.current)
        form.addRow("Available:", self.available)
        form.addRow("Status:", self.state)
        buttons = QHBoxLayout()
        for button in (self.check_button, self.restart_button, self.rollback_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        bad_buttons = QHBoxLayout()
        bad_buttons.addStretch(1)
        bad_buttons.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Release notes:"))
        layout.addWidget(self.notes)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Versions that failed to start (never staged again until cleared):"))
        layout.addWidget(self.bad)
        layout.addLayout(bad_buttons)

        self.check_button.clicked.connect(lambda: controller.check_now(manual=True))
        self.restart_button.clicked.connect(controller.restart_to_update)
        self.rollback_button.clicked.connect(controller.roll_back)
        self.clear_button.clicked.connect(self._clear_selected)
        controller.update_changed.connect(lambda kind, text: self.refresh())
        controller.progress_changed.connect(self._on_progress)
        controller.release_changed.connect(self._on_release)
        controller.runtime_changed.connect(lambda state, info: self.refresh())
        self.refresh()

    def _on_progress(self, pct: int) -> None:
        if pct < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(pct)

    def _on_release(self, release: dict[str, Any]) -> None:
        self.refresh()

    def refresh(self) -> None:
        controller = self.controller
        self.current.setText(controller.current_version())
        self.state.setText(controller.update_text)
        release = controller.release
        bad = controller.bad_versions()
        if release is None:
            self.available.setText("—")
            self.notes.setPlainText("")
        else:
            version = str(release.get("version"))
            suffix = " — marked bad, not used" if version in bad else (" — staged" if release.get("staged") else "")
            self.available.setText(version + suffix)
            self.notes.setPlainText(str(release.get("notes") or "No release notes."))
        self.progress.setVisible(controller.update_kind == "downloading" or self.progress.value() == 100
                                 and controller.staged is not None)
        self.restart_button.setEnabled(controller.staged is not None)
        self.rollback_button.setEnabled(controller.can_roll_back())
        self.check_button.setEnabled(not controller.checking and bool(controller.config.registry_url))
        self.bad.clear()
        for version, entry in bad.items():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.time)) if entry.time else ""
            item = QTreeWidgetItem([version, entry.reason, when])
            item.setToolTip(1, "\n".join(entry.stderr_tail) or entry.reason)
            self.bad.addTopLevelItem(item)
        self.clear_button.setEnabled(self.bad.topLevelItemCount() > 0)

    def _clear_selected(self) -> None:
        for item in self.bad.selectedItems():
            self.controller.clear_bad(item.text(0))
        self.refresh()


class SettingsDialog(QDialog):
    """Update channel, automatic updates, check interval, close-to-tray."""

    def __init__(self, settings: Settings, tray_available: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.original = settings
        self.channel = QComboBox()
        self.channel.setEditable(True)
        self.channel.addItems(list(CHANNELS))
        self.channel.setCurrentText(settings.channel)
        self.auto_update = QCheckBox("Download and install updates automatically")
        self.auto_update.setChecked(settings.auto_update)
        self.interval = QSpinBox()
        self.interval.setRange(1, 7 * 24 * 60)
        self.interval.setSuffix(" min")
        self.interval.setValue(max(1, int(settings.check_interval_s // 60)))
        self.close_to_tray = QCheckBox("Closing the window keeps the app running in the tray")
        self.close_to_tray.setChecked(settings.close_to_tray and tray_available)
        self.close_to_tray.setEnabled(tray_available)
        form = QFormLayout()
        form.addRow("Update channel:", self.channel)
        form.addRow("", self.auto_update)
        form.addRow("Check every:", self.interval)
        form.addRow("", self.close_to_tray)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def result_settings(self) -> Settings:
        return replace(self.original, channel=self.channel.currentText().strip() or self.original.channel,
                       auto_update=self.auto_update.isChecked(),
                       check_interval_s=float(self.interval.value() * 60),
                       close_to_tray=self.close_to_tray.isChecked())


class LogTail(QPlainTextEdit):
    """A live, read-only tail of a log file (follows appends and rotation)."""

    def __init__(self, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.offset = 0
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
        with open(self.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(size - start)
        self.offset = start + len(data)
        self.appendPlainText(data.decode("utf-8", "replace").rstrip("\n"))


class LogsDialog(QDialog):
    def __init__(self, logs_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Logs")
        self.resize(900, 500)
        tabs = QTabWidget()
        self.runtime_log = LogTail(logs_dir / "runtime.log")
        self.shell_log = LogTail(logs_dir / "desktop.log")
        tabs.addTab(self.runtime_log, "Runtime output")
        tabs.addTab(self.shell_log, "Updater and shell")
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        self.setWindowFlag(Qt.WindowType.WindowMaximizeButtonHint, True)
