"""Respecting the desktop: a dark palette, narrow windows, the keyboard, translations, accessibility,
the Logs dialog, the tray, and what closing to the tray says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTranslator
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QTreeWidget,
    QWidget,
)
from pytestqt.qtbot import QtBot

from desktop.core.config import Settings
from desktop.core.results import Problem, UpdateState
from desktop.ui import controller as controller_module
from desktop.ui.controller import UpdateView
from desktop.ui.widgets import Action, Notice, Tone, contrast, luminance
from tests.gui.conftest import WAIT_MS, MakeShell, activate, check, started, visible_texts
from tests.support.feed import Feed


def rendered_contrast(widget: QWidget, area: QWidget) -> tuple[QColor, float]:
    """(background at the banner's corner, best contrast of any pixel inside `area` against it)."""
    image = widget.grab().toImage()
    background = QColor(image.pixel(2, 2))
    rect = area.geometry()
    best = 1.0
    for x in range(rect.left(), rect.right(), 2):
        for y in range(rect.top(), rect.bottom(), 2):
            best = max(best, contrast(background, QColor(image.pixel(x, y))))
    return background, best


@pytest.mark.parametrize("palette", ["light", "dark"])
def test_banners_follow_the_palette_and_stay_readable(qtbot: QtBot, shell: MakeShell, palette: str,
                                                      request: pytest.FixtureRequest) -> None:
    """Item 4: no hard-coded light background; text and background keep WCAG AA contrast."""
    if palette == "dark":
        request.getfixturevalue("dark")
    window, _controller = shell()
    window_color = window.palette().color(QPalette.ColorRole.Window)
    for tone in Tone:
        window.notify(Notice(tone, "Version 1.1.0 is ready.", "Restart the runtime to use it now."))
        qtbot.waitUntil(window.banner.isVisible, timeout=WAIT_MS)
        background, best = rendered_contrast(window.banner, window.banner.text)
        assert best >= 4.5, f"{tone}: text contrast {best:.1f} on {background.name()}"
        assert abs(luminance(background) - luminance(window_color)) < 0.25, \
            f"{tone}: the banner ({background.name()}) follows the window ({window_color.name()})"


def test_long_status_text_is_elided_and_whole_in_the_tooltip(qtbot: QtBot, shell: MakeShell) -> None:
    window, controller = shell()
    window.on_update_changed(UpdateView(state=UpdateState.FAILED, problem=Problem.NOT_TRUSTED))
    full = window.update_label.full_text()
    window.resize(420, 300)
    qtbot.waitUntil(lambda: window.update_label.text().endswith("…"), timeout=WAIT_MS)
    assert full.startswith("The update server's signatures") and full in window.update_label.toolTip()
    assert window.minimumSizeHint().width() < 420, "a long status never forces the window wider"
    assert window.width() <= 440


def test_f6_reaches_the_banner_buttons_from_the_keyboard(qtbot: QtBot, shell: MakeShell) -> None:
    window, _controller = shell()
    activate(qtbot, window)
    pressed: list[str] = []
    window.notify(Notice(Tone.INFO, "Version 1.1.0 is ready.", "", (
        Action("Restart to update", lambda: pressed.append("restart"), "restart-to-update"),
        Action("Later", lambda: pressed.append("later"), "later"))))
    window.open_browser.setFocus()
    QTest.keyClick(window, Qt.Key.Key_F6)
    assert QApplication.focusWidget() is window.banner.button("restart-to-update")
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is window.banner.button("later")
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is window.banner.close_button
    QTest.keyClick(window.banner.button("later"), Qt.Key.Key_Space)
    assert pressed == ["later"]
    assert window.banner.close_button.accessibleName() == "Dismiss"


def test_every_button_of_the_updates_panel_is_reachable_with_tab(qtbot: QtBot, shell: MakeShell,
                                                                 feed: Feed, tmp_path: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(tmp_path / "data").with_overrides(settings=Settings(auto_update=False))
    window, controller = started(qtbot, shell, config=config)
    check(qtbot, window, controller)
    dialog = window.show_updates()
    activate(qtbot, dialog)
    wanted = {b for b in dialog.findChildren(QPushButton) if b.isVisible() and b.isEnabled()}
    assert {dialog.check_button, dialog.primary_button, dialog.skip_button} <= wanted
    dialog.check_button.setFocus()
    seen: set[QWidget] = set()
    for _ in range(40):
        focus = QApplication.focusWidget()
        assert focus is not None
        seen.add(focus)
        QTest.keyClick(focus, Qt.Key.Key_Tab)
    assert wanted <= seen, [b.text() for b in wanted - seen]


def test_every_control_has_an_accessible_name(qtbot: QtBot, shell: MakeShell) -> None:
    window, _controller = started(qtbot, shell)
    window.notify(Notice(Tone.INFO, "Title", "Text", (Action("Act", lambda: None),)))
    dialogs = [window.show_updates(), window.settings_dialog(), window.show_logs(), window.show_whats_new()]
    nameless = []
    for root in [window, *dialogs]:
        for widget in root.findChildren(QWidget):
            if not widget.isVisibleTo(root):
                continue
            if isinstance(widget, QAbstractButton):
                name = widget.accessibleName() or (widget.text() if widget.text().strip("✕●…& ") else "")
            elif isinstance(widget, QProgressBar | QComboBox | QSpinBox | QTextBrowser | QTreeWidget
                            | QPlainTextEdit):
                name = widget.accessibleName()
            else:
                continue
            if not name and not widget.objectName().startswith("qt_"):  # Qt's own parts name themselves
                nameless.append(f"{type(widget).__name__} {widget.objectName()} in {type(root).__name__}")
    for dialog in dialogs:
        dialog.close()
    assert nameless == []


class PseudoTranslator(QTranslator):
    """Marks every string that goes through Qt's translation: what is left unmarked was not tr()'d."""

    def translate(self, context: str, source: str, disambiguation: str | None = None, n: int = -1) -> str:
        return f"⟦{source}⟧"

    def isEmpty(self) -> bool:
        return False


def test_every_visible_string_goes_through_translation(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                       qapp: QApplication) -> None:
    feed.publish("1.1.0")
    translator = PseudoTranslator()
    qapp.installTranslator(translator)
    try:
        window, controller = shell()
        controller.start()
        qtbot.waitUntil(lambda: controller.running is not None, timeout=WAIT_MS)
        with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
            window.check_now()
        roots: list[Any] = [window, window.show_updates(), window.settings_dialog(), window.show_logs(),
                            window.show_whats_new()]
        qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=WAIT_MS)
        untranslated = [(kind, text) for root in roots for kind, text in visible_texts(root)
                        if "⟦" not in text and text.strip("●✕… ") and not text.startswith("http://127.0.0.1")
                        and not text.replace(":", "").isdigit()]  # a time of day is data
        for root in roots[1:]:
            root.close()
    finally:
        qapp.removeTranslator(translator)
    assert untranslated == []


def test_logs_open_at_the_start_of_the_lines_and_the_end_of_the_log(qtbot: QtBot, shell: MakeShell,
                                                                    tmp_path: Path) -> None:
    window, controller = shell()
    logs = controller.config.data.logs_dir
    logs.mkdir(parents=True, exist_ok=True)
    lines = [f"2026-12-01 10:00:{i % 60:02d} INFO line {i}" for i in range(400)]
    lines.append("2026-12-01 10:01:00 WARNING " + "a very long line " * 300)
    (logs / "desktop.log").write_text("\n".join(lines) + "\n")
    dialog = window.show_logs()
    qtbot.waitExposed(dialog)
    view = dialog.shell_log
    dialog.tabs.setCurrentWidget(view)
    qtbot.waitUntil(lambda: view.horizontalScrollBar().maximum() > 0, timeout=WAIT_MS)  # laid out
    qtbot.waitUntil(lambda: view.horizontalScrollBar().value() == 0, timeout=2000)  # not scrolled sideways
    assert view.verticalScrollBar().value() == view.verticalScrollBar().maximum(), "the newest lines are shown"
    with open(logs / "desktop.log", "a") as handle:
        handle.write("2026-12-01 10:02:00 INFO " + "another long line " * 300 + "\n")
    view.poll()
    assert view.horizontalScrollBar().value() == 0
    assert view.verticalScrollBar().value() == view.verticalScrollBar().maximum()


def test_open_data_folder_says_so_when_no_file_manager_opens(qtbot: QtBot, shell: MakeShell,
                                                             tmp_path: Path) -> None:
    opened: list[str] = []

    def no_file_manager(url: Any) -> bool:
        opened.append(url.toLocalFile())
        return False

    window, controller = shell(opener=no_file_manager)
    window.data_action.trigger()
    assert opened == [str(controller.config.data.root)]
    box = window.message_box
    assert box is not None and box.isVisible()
    assert box.text() == "No file manager could be opened on this computer."
    assert str(controller.config.data.root) in box.informativeText()
    copy = next(b for b in box.buttons() if b.text() == "Copy path")
    copy.click()
    assert QGuiApplication.clipboard().text() == str(controller.config.data.root)


def test_check_now_says_up_to_date_then_shows_when_it_checked(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller_module, "CONFIRM_MS", 300)
    feed.publish("0.9.0")
    window, controller = started(qtbot, shell)
    dialog = window.show_updates()
    assert dialog.checked.text() == "never"
    before = time.time()
    check(qtbot, window, controller)
    assert window.update_label.full_text() == "You're up to date"
    assert dialog.state.text() == "You're up to date"
    assert controller.view.last_checked is not None and controller.view.last_checked >= before - 1
    qtbot.waitUntil(lambda: window.update_label.full_text().startswith("Up to date · checked "), timeout=WAIT_MS)
    assert dialog.checked.text() not in ("", "never")


def test_last_check_is_remembered_across_starts(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                tmp_path: Path) -> None:
    from desktop.core.shell import Shell

    feed.publish("0.9.0")
    Shell(feed.config(tmp_path / "data")).check()
    window, controller = shell()
    controller.start()
    qtbot.waitUntil(lambda: controller.view.last_checked is not None, timeout=WAIT_MS)
    assert window.update_label.full_text().startswith("Updates: checked ")


# Offscreen, a forced tray icon finds no platform tray to attach to (harmless).
@pytest.mark.qt_log_ignore("systemTrayWindowChanged")
def test_tray_menu_has_updates_and_restart_to_update(qtbot: QtBot, shell: MakeShell, feed: Feed) -> None:
    feed.publish("1.1.0")
    window, controller = started(qtbot, shell, tray=True)
    texts = [a.text() for a in window.tray_menu.actions() if not a.isSeparator()]
    assert "Updates…" in texts and "Restart to update" in texts and "Quit" in texts
    restart = window.restart_update_action
    assert not restart.isVisible(), "offered only when an update waits"
    check(qtbot, window, controller)
    assert restart.isVisible() and restart.isEnabled()
    restart.trigger()
    qtbot.waitUntil(lambda: controller.running is not None and str(controller.running.version) == "1.1.0",
                    timeout=WAIT_MS)


@pytest.mark.qt_log_ignore("systemTrayWindowChanged")
def test_closing_to_the_tray_says_the_app_still_runs_once(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                          tmp_path: Path) -> None:
    config = feed.config(tmp_path / "data").with_overrides(settings=Settings(close_to_tray=True))
    window, controller = shell(config=config, tray=True)
    with qtbot.waitSignal(window.tray_hint_shown, timeout=WAIT_MS):
        window.close()
    assert not window.isVisible() and not controller.shutting_down, "still running, in the tray"
    window.bring_to_front()
    with qtbot.assertNotEmitted(window.tray_hint_shown):
        window.close()
    assert not controller.shutting_down
