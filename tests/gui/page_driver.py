"""Drive a real page in a real QWebEngineView with real input events (mouse and keys).

Script is used only to *read* the page (where an element is, what it shows), never to act on
it: every action goes through QTest events on the view's focus proxy, as a user's would.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QPoint, Qt, QUrl
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

TIMEOUT_MS = 20_000


def run_js(qtbot: QtBot, view: Any, code: str) -> Any:
    """Evaluate `code` in the page and return its JSON-decoded value (code must return a string)."""
    results: list[object] = []
    view.page().runJavaScript(code, 0, results.append)
    qtbot.waitUntil(lambda: bool(results), timeout=TIMEOUT_MS)
    value = results[0]
    return json.loads(value) if isinstance(value, str) else value


def input_widget(view: Any) -> QWidget:
    """The widget Chromium reads input from (it exists once a page has been loaded)."""
    proxy = view.focusProxy()
    assert proxy is not None, "the view has not rendered a page yet"
    return proxy  # type: ignore[no-any-return]


def element_center(qtbot: QtBot, view: Any, selector: str) -> QPoint:
    """Where `selector`'s element is on screen, scrolled into view first."""
    code = (
        f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
        " if (!el) return JSON.stringify(null); el.scrollIntoView({block: 'center'});"
        " const r = el.getBoundingClientRect();"
        " return JSON.stringify([r.left + r.width / 2, r.top + r.height / 2]); })()"
    )
    point = run_js(qtbot, view, code)
    assert point is not None, f"no element matches {selector!r}"
    zoom = view.zoomFactor()
    return QPoint(round(point[0] * zoom), round(point[1] * zoom))


def click(qtbot: QtBot, view: Any, selector: str, button: Qt.MouseButton = Qt.MouseButton.LeftButton) -> None:
    """A real mouse click in the middle of `selector`'s element (the pointer moves there first)."""
    where = element_center(qtbot, view, selector)
    QTest.mouseMove(input_widget(view), where)
    QTest.mouseClick(input_widget(view), button, Qt.KeyboardModifier.NoModifier, where)


def click_link(qtbot: QtBot, view: Any, selector: str, button: Qt.MouseButton = Qt.MouseButton.LeftButton) -> str:
    """Point at a link until the page says it is hovered, as a user would, then click it; its href."""
    href = run_js(qtbot, view, f"JSON.stringify(document.querySelector({json.dumps(selector)}).href)")
    where = element_center(qtbot, view, selector)
    widget = input_widget(view)
    QTest.mouseMove(widget, QPoint(widget.width() - 2, widget.height() - 2))  # off any link first
    with qtbot.waitSignal(view.page().linkHovered, timeout=TIMEOUT_MS,
                          check_params_cb=lambda url: QUrl(url) == QUrl(href)):
        QTest.mouseMove(input_widget(view), where)
    QTest.mouseClick(input_widget(view), button, Qt.KeyboardModifier.NoModifier, where)
    return str(href)


def type_text(view: Any, text: str) -> None:
    """Real key presses into whatever has focus in the page; "\\n" presses Return."""
    widget = input_widget(view)
    for index, line in enumerate(text.split("\n")):
        if index:
            QTest.keyClick(widget, Qt.Key.Key_Return)
        if line:
            QTest.keyClicks(widget, line)


def focus_by_click(qtbot: QtBot, view: Any, selector: str) -> None:
    """Click `selector` until the page says it has focus.

    A page that has just loaded may drop input that arrives before its first frame is shown;
    a user would click again, and so does this.
    """
    is_focused = f"JSON.stringify(document.activeElement === document.querySelector({json.dumps(selector)}))"
    for _ in range(10):
        click(qtbot, view, selector)
        try:
            qtbot.waitUntil(lambda: bool(run_js(qtbot, view, is_focused)), timeout=2_000)
        except qtbot.TimeoutError:
            continue
        return
    raise AssertionError(f"{selector!r} never took focus")


def type_into(qtbot: QtBot, view: Any, selector: str, text: str) -> None:
    """Click into a text field, type `text` with real key presses, and wait until the field shows it."""
    focus_by_click(qtbot, view, selector)
    type_text(view, text)
    value = f"JSON.stringify(document.querySelector({json.dumps(selector)}).value)"
    qtbot.waitUntil(lambda: run_js(qtbot, view, value) == text, timeout=TIMEOUT_MS)


def text_of(qtbot: QtBot, view: Any, selector: str) -> list[str]:
    """The text of every element matching `selector`, in document order."""
    code = f"JSON.stringify(Array.from(document.querySelectorAll({json.dumps(selector)}), el => el.textContent))"
    return list(run_js(qtbot, view, code))


def dispose(view: Any) -> None:
    """Delete a view now: its page must go before its profile, not at interpreter exit."""
    view.close()
    view.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
