"""Small widgets the window is made of: palette-following colours, an eliding label, the banner."""

from __future__ import annotations

import enum
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStyle,
    QTreeWidget,
    QWidget,
)

MIN_CONTRAST = 4.5  # WCAG AA for body text


class Tone(enum.Enum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


def luminance(color: QColor) -> float:
    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.redF()) + 0.7152 * channel(color.greenF()) + 0.0722 * channel(color.blueF())


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio, 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def mix(a: QColor, b: QColor, amount: float) -> QColor:
    """`a` moved `amount` (0..1) of the way to `b`."""
    return QColor.fromRgbF(a.redF() + (b.redF() - a.redF()) * amount,
                           a.greenF() + (b.greenF() - a.greenF()) * amount,
                           a.blueF() + (b.blueF() - a.blueF()) * amount)


def is_dark(palette: QPalette) -> bool:
    return luminance(palette.color(QPalette.ColorRole.Window)) < 0.2


def accent(palette: QPalette, tone: Tone) -> QColor:
    """The tone's colour, lighter on a dark palette so it stands out there too."""
    dark = is_dark(palette)
    if tone is Tone.INFO:
        return palette.color(QPalette.ColorRole.Highlight)
    colors = {Tone.SUCCESS: ("#2e7d32", "#66bb6a"), Tone.WARNING: ("#b26a00", "#ffb74d"),
              Tone.ERROR: ("#c62828", "#ef5350")}
    return QColor(colors[tone][1 if dark else 0])


def tinted_colors(palette: QPalette, tone: Tone) -> tuple[QColor, QColor, QColor]:
    """(background, border, text) for a tinted surface that stays readable on this palette."""
    window = palette.color(QPalette.ColorRole.Window)
    text = palette.color(QPalette.ColorRole.WindowText)
    edge = accent(palette, tone)
    amount = 0.22 if is_dark(palette) else 0.14
    background = mix(window, edge, amount)
    while amount > 0 and contrast(background, text) < MIN_CONTRAST:
        amount = max(0.0, amount - 0.04)
        background = mix(window, edge, amount)
    return background, edge, text


def state_dot_color(palette: QPalette, tone: Tone | None) -> QColor:
    if tone is None:
        return palette.color(QPalette.ColorRole.PlaceholderText)
    return accent(palette, tone)


def plain_label(text: str = "", *, wrap: bool = True) -> QLabel:
    """A label that never interprets its text as markup (runtime output, reasons, paths)."""
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    return label


def no_default(*buttons: QAbstractButton) -> None:
    """Buttons that Enter never presses (see desktop/ui/dialogs.py)."""
    for button in buttons:
        if isinstance(button, QPushButton):
            button.setAutoDefault(False)
            button.setDefault(False)


def version_list(headers: Sequence[str], name: str, rows: int = 5) -> QTreeWidget:
    """A list of versions with why and since, several selectable: the first and last columns fit their
    contents, the middle one (the reason) takes the rest."""
    tree = QTreeWidget()
    tree.setHeaderLabels(list(headers))
    tree.setRootIsDecorated(False)
    tree.setAccessibleName(name)
    tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
    tree.setMinimumHeight(tree.fontMetrics().height() * rows)
    header = tree.header()
    header.setStretchLastSection(False)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
    header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
    return tree


def plain_tip(text: str) -> str:
    """`text` as a tooltip that shows it literally (Qt renders a tooltip that looks like HTML as HTML)."""
    return f"<p style='white-space:pre-wrap'>{html.escape(text, quote=False)}</p>" if text else ""


class ElidedLabel(QLabel):
    """Plain text that ends in "…" when it does not fit; the whole text is in the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._full = ""
        self.setText(text)

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(plain_tip(text))
        self.setAccessibleName(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def _elide(self) -> None:
        width = max(self.contentsRect().width(), 1)
        super().setText(self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 8, hint.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance("Mm…"), super().minimumSizeHint().height())


@dataclass(frozen=True)
class Action:
    label: str
    run: Callable[[], object]
    name: str = ""  # a stable object name for tests and accessibility tools


@dataclass(frozen=True)
class Notice:
    """One message in the banner: what happened, in plain words, and what the user can do."""

    tone: Tone
    title: str
    text: str = ""
    actions: Sequence[Action] = field(default_factory=tuple)
    key: str = ""  # what the notice is about ("staged:1.1.0"): the same key replaces it quietly


class Banner(QFrame):
    """A strip above the page: tinted from the palette, keyboard-reachable buttons, dismissible."""

    dismissed = Signal(str)  # the notice's key

    def __init__(self, dismiss_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.notice: Notice | None = None
        self._styling = False
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setObjectName("banner-text")
        self.text.setTextFormat(Qt.TextFormat.RichText)  # built from escaped parts only (see show_notice)
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons: list[QPushButton] = []
        self.close_button = QPushButton("✕")
        self.close_button.setObjectName("banner-dismiss")
        self.close_button.setFlat(True)
        self.close_button.setAutoDefault(False)
        self.close_button.setToolTip(dismiss_text)
        self.close_button.setAccessibleName(dismiss_text)
        self.close_button.setFixedWidth(self.fontMetrics().horizontalAdvance("✕") * 3)
        self.close_button.clicked.connect(self.dismiss)
        self._row = QHBoxLayout(self)
        margin = self.fontMetrics().height() // 2
        self._row.setContentsMargins(margin * 2, margin, margin, margin)
        self._row.addWidget(self.icon)
        self._row.addWidget(self.text, 1)
        self._row.addWidget(self.close_button)
        self.hide()

    def show_notice(self, notice: Notice) -> None:
        self.notice = notice
        title = html.escape(notice.title, quote=False)
        body = html.escape(notice.text, quote=False).replace("\n", "<br>")
        self.text.setText(f"<b>{title}</b> {body}" if body else f"<b>{title}</b>")
        self.setAccessibleName(f"{notice.title} {notice.text}".strip())
        for button in self.buttons:
            self._row.removeWidget(button)
            button.deleteLater()
        self.buttons = []
        for index, action in enumerate(notice.actions):
            button = QPushButton(action.label)
            button.setObjectName(action.name or f"banner-action-{index}")
            button.setAutoDefault(False)
            button.setAccessibleName(action.label)
            button.clicked.connect(action.run)
            self._row.insertWidget(self._row.count() - 1, button)
            self.buttons.append(button)
        QWidget.setTabOrder(self.buttons[-1] if self.buttons else self.close_button, self.close_button)
        self.restyle()
        self.show()

    def dismiss(self) -> None:
        key = self.notice.key if self.notice else ""
        self.hide()
        self.notice = None
        self.dismissed.emit(key)

    def button(self, name: str) -> QPushButton | None:
        return next((b for b in self.buttons if b.objectName() == name), None)

    def focus_first(self) -> bool:
        """Keyboard users reach the banner with F6: focus its first button."""
        if not self.isVisible():
            return False
        target = self.buttons[0] if self.buttons else self.close_button
        target.setFocus(Qt.FocusReason.ShortcutFocusReason)
        return True

    def colors(self) -> tuple[QColor, QColor, QColor]:
        """(background, border, text), from the surrounding palette: the banner's own palette
        carries its tinted background once the style sheet is applied."""
        tone = self.notice.tone if self.notice else Tone.INFO
        parent = self.parentWidget()
        return tinted_colors(parent.palette() if parent is not None else QApplication.palette(), tone)

    def restyle(self) -> None:
        if self._styling:
            return
        background, border, text = self.colors()
        sheet = (f"QFrame#banner {{ background-color: {background.name()}; "
                 f"border-bottom: 2px solid {border.name()}; }} "
                 f"QFrame#banner QLabel {{ color: {text.name()}; }}")
        self._styling = True
        try:
            if sheet != self.styleSheet():
                self.setStyleSheet(sheet)
        finally:
            self._styling = False
        icon = {Tone.INFO: QStyle.StandardPixmap.SP_MessageBoxInformation,
                Tone.SUCCESS: QStyle.StandardPixmap.SP_DialogApplyButton,
                Tone.WARNING: QStyle.StandardPixmap.SP_MessageBoxWarning,
                Tone.ERROR: QStyle.StandardPixmap.SP_MessageBoxCritical}[self.notice.tone if self.notice else Tone.INFO]
        size = self.fontMetrics().height()
        self.icon.setPixmap(self.style().standardIcon(icon).pixmap(QSize(size, size), self.devicePixelRatioF()))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.notice is not None:
            self.restyle()
