"""Safe buttons and the update choices: Enter never rolls back, Roll back asks and confirms, the state
right after a rollback, Download and install with automatic updates off, Skip this version, Cancel."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot

from desktop.core.config import Settings
from desktop.core.pointer import read_pointer
from desktop.core.results import Running, UpdateOutcome, UpdateState
from desktop.core.shell import Shell
from tests.gui.conftest import WAIT_MS, MakeShell, activate, check, message_box, running_label, started, wait_running
from tests.support.feed import Feed
from tests.support.server import LoopbackServer


def staged_and_running(qtbot: QtBot, shell: MakeShell, feed: Feed, data: Path, **options: object):  # type: ignore[no-untyped-def]
    """1.1.0 staged before the app starts, so the app runs it and can roll back to 1.0.0."""
    feed.publish("1.1.0")
    assert Shell(feed.config(data)).update().outcome is UpdateOutcome.STAGED
    window, controller = started(qtbot, shell, "1.1.0", **options)
    qtbot.waitUntil(lambda: controller.lists.rollback is not None, timeout=WAIT_MS)
    return window, controller


def test_enter_after_check_now_never_rolls_back(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                server: LoopbackServer, tmp_path: Path) -> None:
    """Item 2: Check now goes busy; the keyboard user's next Enter must not reach Roll back."""
    window, controller = staged_and_running(qtbot, shell, feed, tmp_path / "data")
    server.fault("/feed/metadata/timestamp.json", "stall", seconds=60)
    dialog = window.show_updates()
    qtbot.waitUntil(dialog.rollback_button.isEnabled, timeout=WAIT_MS)
    activate(qtbot, dialog)
    dialog.check_button.setFocus()
    assert QApplication.focusWidget() is dialog.check_button
    with qtbot.assertNotEmitted(dialog.roll_back_requested):
        QTest.keyClick(dialog.check_button, Qt.Key.Key_Space)  # Check now, from the keyboard
        assert controller.busy and not dialog.check_button.isEnabled()
        assert QApplication.focusWidget() is dialog.state, "focus went to the status, not to Roll back"
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Return):
            QTest.keyClick(QApplication.focusWidget() or dialog, key)
    assert window.message_box is None, "no rollback was even asked for"
    assert not any(b.isDefault() or b.autoDefault() for b in (dialog.check_button, dialog.rollback_button,
                                                              dialog.primary_button, dialog.allow_button))
    pointer = read_pointer(tmp_path / "data" / "current.json")
    assert pointer is not None and str(pointer.version) == "1.1.0"
    assert Shell(feed.config(tmp_path / "data")).bad_versions() == ()


def test_roll_back_asks_says_what_it_will_do_and_confirms(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                         tmp_path: Path) -> None:
    """Items 2 and 5: a confirmation that names both versions (Enter cancels), then the state right
    after: no stale "Running 1.1.0", the panel in step with the runtime, a banner saying what happened."""
    window, controller = staged_and_running(qtbot, shell, feed, tmp_path / "data")
    dialog = window.show_updates()
    qtbot.waitUntil(dialog.rollback_button.isEnabled, timeout=WAIT_MS)
    qtbot.mouseClick(dialog.rollback_button, Qt.MouseButton.LeftButton)
    box = message_box(qtbot, window)
    assert box.text() == "Go back to version 1.0.0 (built in)?"
    assert "Version 1.1.0 will be marked as bad" in box.informativeText()
    assert "notes and other data are kept" in box.informativeText()
    assert box.buttonRole(box.defaultButton()) == QMessageBox.ButtonRole.RejectRole
    QTest.keyClick(box, Qt.Key.Key_Return)  # Enter on the question cancels
    qtbot.waitUntil(lambda: window.message_box is None, timeout=WAIT_MS)
    assert str(read_pointer(tmp_path / "data" / "current.json").version) == "1.1.0"  # type: ignore[union-attr]

    qtbot.mouseClick(dialog.rollback_button, Qt.MouseButton.LeftButton)
    box = message_box(qtbot, window)
    seen_at_running: list[str] = []

    def at_running(event: object) -> None:
        if isinstance(event, Running) and str(event.version) == "1.0.0":
            seen_at_running.append(dialog.current.text())
    controller.runtime_event.connect(at_running)
    confirm = next(b for b in box.buttons() if b.objectName() == "confirm-roll-back")
    assert confirm.text() == "Roll back"
    qtbot.mouseClick(confirm, Qt.MouseButton.LeftButton)
    assert running_label(window) == "Switching to 1.0.0…", "the status bar no longer claims 1.1.0 runs"
    assert dialog.current.text() == "switching to 1.0.0…"
    assert not dialog.rollback_button.isEnabled()
    wait_running(qtbot, window, "1.0.0")
    assert seen_at_running == ["1.0.0 (built in)"], "the panel shows the new version the moment it runs"
    qtbot.waitUntil(lambda: window.banner.notice is not None and window.banner.notice.key == "rolled-back",
                    timeout=WAIT_MS)
    assert window.banner.notice.title == "Rolled back to 1.0.0."
    assert "1.1.0 won't be installed again" in window.banner.notice.text
    assert "Rolled back to 1.0.0" in dialog.state.text()
    qtbot.waitUntil(lambda: dialog.blocked.topLevelItemCount() == 1, timeout=WAIT_MS)
    assert dialog.blocked.topLevelItem(0).text(1) == "rolled back by you"
    assert read_pointer(tmp_path / "data" / "current.json") is None


def test_automatic_updates_off_offers_download_and_install(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                           tmp_path: Path) -> None:
    """Item 6: with automatic updates off, a found update comes with Download and install."""
    feed.publish("1.1.0")
    config = feed.config(tmp_path / "data")
    window, controller = started(qtbot, shell, config=config.with_overrides(
        settings=Settings(auto_update=False)))
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.AVAILABLE
    assert window.update_label.full_text() == "Version 1.1.0 is available"
    assert not (tmp_path / "data" / "versions" / "1.1.0").exists(), "nothing downloaded behind the user's back"
    button = window.banner.button("download-and-install")
    assert button is not None and button.isVisible() and window.banner.button("skip") is not None
    dialog = window.show_updates()
    assert dialog.primary_button.isVisible() and dialog.primary_button.text() == "Download and install"
    assert "notes for 1.1.0" in dialog.notes.toPlainText()
    with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
        button.click()
    assert controller.view.state is UpdateState.STAGED
    assert dialog.primary_button.text() == "Restart to update"
    assert window.banner.button("restart-to-update") is not None
    window.banner.button("restart-to-update").click()
    wait_running(qtbot, window, "1.1.0")


def test_skip_this_version_is_remembered_and_undone_from_the_panel(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                   tmp_path: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(tmp_path / "data").with_overrides(settings=Settings(auto_update=False))
    window, controller = started(qtbot, shell, config=config)
    check(qtbot, window, controller)
    with qtbot.waitSignal(controller.skipped, timeout=WAIT_MS):
        window.banner.button("skip").click()
    assert window.banner.notice.title == "You won't be offered 1.1.0 again."
    assert controller.view.release is None
    assert [(str(b.version), b.store) for b in Shell(config).blocked()] == [("1.1.0", "skipped by the user")]
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.UP_TO_DATE, "a skipped version is not offered again"
    dialog = window.show_updates()
    qtbot.waitUntil(lambda: dialog.blocked.topLevelItemCount() == 1, timeout=WAIT_MS)
    assert dialog.blocked.topLevelItem(0).text(1) == "skipped by you"
    dialog.blocked.topLevelItem(0).setSelected(True)
    with qtbot.waitSignal(controller.allowed, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.allow_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.blocked.topLevelItemCount() == 0, timeout=WAIT_MS)
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.AVAILABLE


def test_undo_in_the_banner_brings_the_offer_back(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                  tmp_path: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(tmp_path / "data").with_overrides(settings=Settings(auto_update=False))
    window, controller = started(qtbot, shell, config=config)
    check(qtbot, window, controller)
    with qtbot.waitSignal(controller.skipped, timeout=WAIT_MS):
        window.banner.button("skip").click()
    with qtbot.waitSignal(controller.allowed, timeout=WAIT_MS):
        window.banner.button("undo-skip").click()
    assert controller.view.state is UpdateState.AVAILABLE and str(controller.view.release.version) == "1.1.0"
    assert Shell(config).blocked() == ()


def test_download_shows_size_speed_eta_and_cancel_keeps_the_partial(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                    server: LoopbackServer, tmp_path: Path) -> None:
    feed.publish("1.1.0", extra_files={"data/blob.bin": os.urandom(600_000)})  # does not compress
    target = feed.target_file("notes-runtime-1.1.0").name
    server.fault(f"/feed/targets/{target}", "slow", chunk=16 * 1024, delay=0.05)
    window, controller = started(qtbot, shell)
    window.check_now()
    qtbot.waitUntil(lambda: controller.view.transfer is not None and controller.view.transfer.speed is not None
                    and controller.view.transfer.eta is not None, timeout=WAIT_MS)
    text = window.update_label.full_text()
    assert text.startswith("Downloading update — ") and " of " in text and "B/s" in text and "left" in text
    assert window.progress.isVisible() and 0 < window.progress.value() < 100
    assert window.cancel_button.isVisible()
    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    assert controller.view.cancelled and not controller.busy, "cancelled at once, not after the next chunk"
    assert "resumes from where it stopped" in window.update_label.full_text()
    assert not window.progress.isVisible()
    downloads = tmp_path / "data" / "downloads"

    def to_target() -> list:  # type: ignore[type-arg]
        return [r for r in server.requests_to("/feed/targets/") if target in r.path]
    qtbot.waitUntil(lambda: len(to_target()) == 1, timeout=WAIT_MS)  # the cancelled request has ended
    part = next(p for p in downloads.iterdir() if p.name.endswith(".part"))
    assert part.stat().st_size > 0, "the partial download is kept"
    server.clear_faults()
    server.clear_requests()
    with qtbot.waitSignal(controller.check_finished, timeout=WAIT_MS):
        controller.download_and_install()
    assert controller.view.state is UpdateState.STAGED
    qtbot.waitUntil(lambda: len(to_target()) == 1, timeout=WAIT_MS)
    assert to_target()[0].headers.get("range", "").startswith("bytes="), "the download resumed"
    assert to_target()[0].status == 206


def test_a_button_that_goes_away_hands_focus_to_the_status(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                           tmp_path: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(tmp_path / "data").with_overrides(settings=Settings(auto_update=False))
    window, controller = started(qtbot, shell, config=config)
    check(qtbot, window, controller)
    dialog = window.show_updates()
    activate(qtbot, dialog)
    dialog.skip_button.setFocus()
    with qtbot.waitSignal(controller.skipped, timeout=WAIT_MS):
        QTest.keyClick(dialog.skip_button, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: not dialog.skip_button.isVisible(), timeout=WAIT_MS)
    assert QApplication.focusWidget() is dialog.state
