"""The app itself in the Updates panel: its version, its own updates, and the versions that failed to start."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QPushButton, QTreeWidgetItem, QWidget

from desktop import __version__
from desktop.core.text import one_line
from desktop.ui.controller import AppView, ShellController
from desktop.ui.widgets import no_default, plain_label, plain_tip, version_list
from desktop.ui.wording import app_updates_text, when_text


class AppSection(QGroupBox):
    """Renders the controller's AppView; "Restart to update" asks the window to quit with the launcher's code."""

    restart_requested = Signal()

    def __init__(self, controller: ShellController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setTitle(self.tr("The app itself"))
        self.version = plain_label()
        self.status = plain_label()
        self.status.setObjectName("app-status")
        self.restart_button = QPushButton(self.tr("Restart to update"))
        self.restart_button.setObjectName("restart-app")
        self.restart_button.setToolTip(self.tr("Quit and start the new version of the app (the runtime and your "
                                               "data carry over)"))
        self.restart_button.clicked.connect(self.restart_requested)
        self.bad_title = plain_label(self.tr("These versions of the app didn't start and won't be used again "
                                             "unless you allow them:"))
        self.bad = version_list([self.tr("Version"), self.tr("What happened"), self.tr("Since")],
                                self.tr("App versions that didn't start"), rows=4)
        self.bad.itemSelectionChanged.connect(self._selection_changed)
        self.allow_button = QPushButton(self.tr("Allow again"))
        self.allow_button.setObjectName("allow-app")
        self.allow_button.setToolTip(self.tr("Let the selected versions of the app be installed and started again"))
        self.allow_button.clicked.connect(self._allow_selected)
        no_default(self.restart_button, self.allow_button)

        form = QFormLayout()
        form.addRow(self.tr("Version:"), self.version)
        form.addRow(self.tr("Updates:"), self.status)
        restart_row = QHBoxLayout()
        restart_row.addWidget(self.restart_button)
        restart_row.addStretch(1)
        form.addRow("", restart_row)
        allow_row = QHBoxLayout()
        allow_row.addStretch(1)
        allow_row.addWidget(self.allow_button)
        self.bad_box = QWidget()
        bad_layout = QFormLayout(self.bad_box)
        bad_layout.setContentsMargins(0, 0, 0, 0)
        bad_layout.addRow(self.bad_title)
        bad_layout.addRow(self.bad)
        bad_layout.addRow(allow_row)
        form.addRow(self.bad_box)
        self.setLayout(form)
        controller.app_changed.connect(self.show_app)
        self.show_app(controller.app)

    def show_app(self, app: AppView) -> None:
        info = app.info
        self.version.setText(self.tr("Desktop Shell {version}").format(
            version=info.version if info is not None else __version__))
        self.status.setText(app_updates_text(app) or self.tr("…"))
        self.restart_button.setVisible(app.restart_exit_code is not None)
        bad = info.bad if info is not None else ()
        self.bad_box.setVisible(bool(bad))
        self.bad.clear()
        for entry in sorted(bad, key=lambda e: e.version, reverse=True):
            reason = one_line(entry.reason, 200)
            item = QTreeWidgetItem([str(entry.version), self.tr("didn't start ({reason})").format(reason=reason),
                                    when_text(entry.time) if entry.time else ""])
            item.setToolTip(1, plain_tip("\n".join(entry.stderr_tail) or reason))
            self.bad.addTopLevelItem(item)
        self.allow_button.setEnabled(False)

    def _selection_changed(self) -> None:
        self.allow_button.setEnabled(bool(self.bad.selectedItems()))

    def _allow_selected(self) -> None:
        for item in self.bad.selectedItems():
            self.controller.allow_app_again(item.text(0))

