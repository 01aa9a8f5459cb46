"""The bundled Notes page, driven in the real web view with real input: notes save and delete."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pytestqt.qtbot import QtBot

from desktop.ui import webview
from tests.gui.page_driver import TIMEOUT_MS, click, dispose, run_js, text_of, type_into
from tests.support.runtime_proc import BundledRuntime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundledRuntime]:
    with BundledRuntime.start(tmp_path_factory.mktemp("notes") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def shared_view(qapp: Any) -> Iterator[Any]:
    opened: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DESKTOP_NO_WEBVIEW", raising=False)
        view = webview.make_view(opener=lambda url: opened.append(url.toString()))
    if view is None:
        pytest.skip("QtWebEngine is not installed")
    view.resize(900, 700)
    view.show()
    view.opened = opened
    yield view
    dispose(view)


@pytest.fixture
def view(qtbot: QtBot, shared_view: Any, runtime: BundledRuntime) -> Any:
    with qtbot.waitSignal(shared_view.loadFinished, timeout=TIMEOUT_MS):
        shared_view.show_runtime(runtime.url, runtime.token)
    return shared_view


def stored_notes(runtime: BundledRuntime) -> list[dict[str, Any]]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(runtime.url + "api/notes", headers=runtime.auth_headers)
    assert response.status_code == 200, response.text
    notes = response.json()["notes"]
    assert isinstance(notes, list)
    return notes


def test_note_typed_in_the_page_is_saved_shown_and_deleted(qtbot: QtBot, view: Any,
                                                          runtime: BundledRuntime) -> None:
    assert "Notes" in view.title()
    type_into(qtbot, view, "#text", "Buy milk\nand bread")
    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS) as loaded:
        click(qtbot, view, "form.compose button[type=submit]")
    assert loaded.args == [True]
    assert "Forbidden" not in view.title(), text_of(qtbot, view, "body")

    [note] = stored_notes(runtime)
    assert note["text"] == "Buy milk\nand bread"
    assert (note["words"], note["lines"]) == (4, 2)
    assert text_of(qtbot, view, ".note .text") == ["Buy milk\nand bread"]
    assert text_of(qtbot, view, "#notes-heading") == ["1 note · 4 words"]

    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS):
        click(qtbot, view, f"#note-{note['id']} button.danger")
    assert stored_notes(runtime) == []

    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS):
        view.reload()
    assert text_of(qtbot, view, ".note .text") == []
    assert "No notes yet" in " ".join(text_of(qtbot, view, "p.empty"))
    assert run_js(qtbot, view, "JSON.stringify(document.querySelector('#text').value)") == ""
    assert view.opened == [], "nothing was handed to the system"


def test_an_empty_note_is_refused_in_the_page_and_nothing_is_stored(qtbot: QtBot, view: Any,
                                                                   runtime: BundledRuntime) -> None:
    type_into(qtbot, view, "#text", "   ")
    with qtbot.waitSignal(view.loadFinished, timeout=TIMEOUT_MS):
        click(qtbot, view, "form.compose button[type=submit]")
    assert text_of(qtbot, view, "[role=alert]") == ["a note needs some text"]
    assert stored_notes(runtime) == []


def test_the_page_without_the_token_is_refused(runtime: BundledRuntime) -> None:
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(runtime.url).status_code in (401, 403)
        assert client.get(runtime.url + "api/notes").status_code in (401, 403)
        posted = client.post(runtime.url + "api/notes", json={"text": "sneaky"})
        assert posted.status_code in (401, 403)
    assert stored_notes(runtime) == []


def test_the_view_with_another_token_gets_only_the_locked_page(qtbot: QtBot, shared_view: Any,
                                                              runtime: BundledRuntime) -> None:
    with qtbot.waitSignal(shared_view.loadFinished, timeout=TIMEOUT_MS):
        shared_view.show_runtime(runtime.url, secrets.token_urlsafe(32))
    assert shared_view.title().startswith("Locked")
    assert text_of(qtbot, shared_view, "#text") == []


def test_runtime_stays_quiet_about_its_token(runtime: BundledRuntime) -> None:
    assert runtime.token and runtime.token not in runtime.stderr
