"""Outside programs started from the frozen app get the user's library path, not the bundle's."""

from __future__ import annotations

import os
import sys

import pytest
from PySide6.QtCore import QUrl

from desktop.ui.webview import same_origin, user_library_path


def test_frozen_app_hands_the_users_library_path_to_outside_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/app/_internal")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/home/user/lib")
    with user_library_path():
        assert os.environ["LD_LIBRARY_PATH"] == "/home/user/lib"
        assert "LD_LIBRARY_PATH_ORIG" not in os.environ
    assert os.environ["LD_LIBRARY_PATH"] == "/opt/app/_internal"
    assert os.environ["LD_LIBRARY_PATH_ORIG"] == "/home/user/lib"


def test_unfrozen_environment_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/some/where")
    with user_library_path():
        assert os.environ["LD_LIBRARY_PATH"] == "/some/where"


def test_same_origin_is_scheme_host_and_port() -> None:
    base = QUrl("http://127.0.0.1:4000/")
    assert same_origin(QUrl("http://127.0.0.1:4000/notes?x=1"), base)
    assert not same_origin(QUrl("http://127.0.0.1:4001/"), base)
    assert not same_origin(QUrl("https://example.com/"), base)
