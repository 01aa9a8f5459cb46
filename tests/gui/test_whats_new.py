"""What's new once after an update took effect, release notes as safe rich text, and a gentle
reminder for an update that has waited for days."""

from __future__ import annotations

import time
from pathlib import Path

from packaging.version import Version
from pytestqt.qtbot import QtBot

from desktop.core.keys import load_signer
from desktop.core.results import ReleaseInfo, UpdateState
from desktop.core.shell import Shell
from desktop.ui.dialogs import WhatsNewDialog
from desktop.ui.widgets import Tone
from tests.gui.conftest import WAIT_MS, MakeShell, check, started, wait_running
from tests.support.feed import Feed
from tests.support.server import LoopbackServer

DAY = 86400.0


def publish(feed: Feed, version: str, notes: str) -> None:
    feed.repo.publish(feed.runtime(version), load_signer(feed.key.private_path), notes=notes)


def test_whats_new_is_offered_once_after_the_update_took_effect(qtbot: QtBot, shell: MakeShell, feed: Feed,
                                                                tmp_path: Path) -> None:
    publish(feed, "1.0.5", "## Faster\n- Starts in half the time.")
    publish(feed, "1.1.0", "**Word counts** for every note.")
    window, controller = started(qtbot, shell)
    check(qtbot, window, controller)
    assert controller.view.state is UpdateState.STAGED
    assert [str(r.version) for r in controller.view.notes] == ["1.1.0", "1.0.5"]
    with qtbot.waitSignal(controller.whats_new, timeout=WAIT_MS) as offered:
        window.banner.button("restart-to-update").click()
    version, notes = offered.args
    assert str(version) == "1.1.0" and [str(r.version) for r in notes] == ["1.1.0", "1.0.5"]
    notice = window.banner.notice
    assert notice is not None and notice.title == "Updated to 1.1.0." and notice.tone is Tone.SUCCESS
    window.banner.button("whats-new").click()
    dialog = window.whats_new_dialog
    assert dialog is not None and dialog.isVisible() and dialog.windowTitle() == "What's new in 1.1.0"
    text = dialog.browser.toPlainText()
    assert text.index("Version 1.1.0") < text.index("Word counts") < text.index("Version 1.0.5") \
        < text.index("Starts in half the time.")
    assert not window.banner.isVisible()
    dialog.close()

    with qtbot.assertNotEmitted(controller.whats_new, wait=500):  # not again on a runtime restart
        controller.restart_runtime()
        qtbot.waitUntil(lambda: controller.running is not None, timeout=WAIT_MS)
    window2, controller2 = shell()
    with qtbot.assertNotEmitted(controller2.whats_new, wait=500):  # nor at the next app start
        controller.shutdown()
        controller.supervisor.close()
        controller2.start()
        wait_running(qtbot, window2, "1.1.0")


def test_release_notes_are_safe_rich_text(qtbot: QtBot, server: LoopbackServer) -> None:
    """Notes come from the registry: no scripts, no images or anything else loaded, links as text."""
    server.put("/track.png", b"\x89PNG tracking pixel", "image/png")
    notes = (f'<script>alert(1)</script>\n<img src="{server.url}/track.png">\n'
             f"![pixel]({server.url}/track.png)\n![local](file:///etc/hostname)\n"
             "[click here](javascript:alert(1))\n\n**bold** and `code`\n- one\n- two")
    dialog = WhatsNewDialog()
    qtbot.addWidget(dialog)
    dialog.show_releases(Version("1.1.0"), (ReleaseInfo(Version("1.1.0"), "stable", notes),))
    dialog.show()
    qtbot.waitExposed(dialog)
    html = dialog.browser.toHtml()
    text = dialog.browser.toPlainText()
    assert "<script>alert(1)</script>" in text, "markup in the notes is shown as text"
    assert "click here (javascript:alert(1))" in text and "href" not in html
    assert "<img" not in html
    assert "font-weight" in html and "bold" in text and "code" in text
    dialog.browser.setHtml(f'<img src="{server.url}/track.png"><img src="file:///etc/hostname">')
    qtbot.wait(200)
    assert server.requests_to("/track.png") == [], "nothing is fetched for the notes"
    assert dialog.browser.loadResource(2, f"{server.url}/track.png") is None


def test_a_staged_update_waiting_for_days_gets_a_gentle_reminder(qtbot: QtBot, shell: MakeShell,
                                                                 feed: Feed) -> None:
    feed.publish("1.1.0")
    later = [0.0]
    window, controller = started(qtbot, shell, clock=lambda: time.time() + later[0])
    check(qtbot, window, controller)
    window.banner.button("later").click()
    assert not window.banner.isVisible()
    with qtbot.assertNotEmitted(controller.reminder, wait=300):
        controller.check_reminder()  # staged just now: nothing to say
    later[0] = 4 * DAY
    with qtbot.waitSignal(controller.reminder, timeout=WAIT_MS):
        controller.check_reminder()
    notice = window.banner.notice
    assert notice is not None and notice.title == "Version 1.1.0 has been ready for 4 days."
    assert notice.tone is Tone.INFO and window.banner.button("restart-to-update") is not None
    assert str(controller.running.version) == "1.0.0", "a reminder, never a forced restart"  # type: ignore[union-attr]
    later[0] = 4.5 * DAY
    with qtbot.assertNotEmitted(controller.reminder, wait=300):
        controller.check_reminder()  # at most once a day
    later[0] = 5.2 * DAY
    with qtbot.waitSignal(controller.reminder, timeout=WAIT_MS):
        controller.check_reminder()
    assert Shell(controller.config).staged_reminder(Version("1.1.0"), last_reminded=None) is None
