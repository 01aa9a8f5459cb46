"""Pointer and bad-version files: atomic writes, tolerant reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.state import (
    BadVersions,
    Pointer,
    advance_pointer,
    atomic_write_json,
    change_pointer,
    read_json_object,
    read_pointer,
    write_pointer,
)


@pytest.mark.parametrize("content", [b"", b"   \n", b"{", b'{"version": "1.2', b"\x00\xff\xfe garbage",
                                     b"[1, 2]", b'"1.2.0"', b'{"version": "../../etc"}',
                                     b'{"version": 12}', b'{"nothing": true}'])
def test_corrupt_pointer_reads_as_none(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "current.json"
    path.write_bytes(content)
    assert read_pointer(path) is None
    assert caplog.records, "a corrupt pointer must be logged"


@pytest.mark.parametrize("content", [b"", b"{", b"not json", b"[]", b'{"1.0.0": "oops", "x/../y": {}}'])
def test_corrupt_bad_versions_reads_as_nothing_bad(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad-versions.json"
    path.write_bytes(content)
    assert BadVersions(path).load() == {}


def test_missing_files_read_as_none(tmp_path: Path) -> None:
    assert read_pointer(tmp_path / "current.json") is None
    assert BadVersions(tmp_path / "bad-versions.json").load() == {}


def test_pointer_round_trip_and_contract_keys(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    write_pointer(path, Pointer(Version("1.2.0"), known_good=True, last_known_good=Version("1.1.0")))
    raw = json.loads(path.read_text())
    assert raw["version"] == "1.2.0"
    pointer = read_pointer(path)
    assert pointer is not None
    assert (pointer.version, pointer.known_good, pointer.last_known_good) == (
        Version("1.2.0"), True, Version("1.1.0"))


def test_write_none_removes_pointer(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    write_pointer(path, Pointer(Version("1.0.1")))
    write_pointer(path, None)
    assert not path.exists()


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for i in range(5):
        atomic_write_json(path, {"i": i})
    assert read_json_object(path) == {"i": 4}
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_failed_write_keeps_old_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert read_json_object(path) == {"ok": True}
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_advance_pointer_keeps_committed_version_as_fallback() -> None:
    committed = Pointer(Version("1.1.0"), known_good=True, last_known_good=Version("1.0.5"))
    assert advance_pointer(committed, Version("1.2.0")).last_known_good == Version("1.1.0")
    uncommitted = Pointer(Version("1.1.0"), known_good=False, last_known_good=Version("1.0.5"))
    assert advance_pointer(uncommitted, Version("1.2.0")).last_known_good == Version("1.0.5")
    assert advance_pointer(None, Version("1.2.0")).last_known_good is None


def test_change_pointer_is_read_modify_write(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    write_pointer(path, Pointer(Version("1.0.1")))
    result = change_pointer(path, lambda p: p)
    assert result is not None and result.version == Version("1.0.1")
    change_pointer(path, lambda p: advance_pointer(p, Version("1.0.2")))
    pointer = read_pointer(path)
    assert pointer is not None and pointer.version == Version("1.0.2")


def test_bad_versions_mark_clear(tmp_path: Path) -> None:
    bad = BadVersions(tmp_path / "bad-versions.json")
    bad.mark(Version("1.2.0"), "exit code 17", 17, [f"line {i}" for i in range(30)])
    bad.mark(Version("1.3"), "timeout")
    raw = json.loads((tmp_path / "bad-versions.json").read_text())
    assert set(raw) == {"1.2.0", "1.3"}
    entry = bad.load()[Version("1.2.0")]
    assert entry.exit_code == 17 and len(entry.stderr_tail) == 20 and entry.stderr_tail[-1] == "line 29"
    assert bad.clear(Version("1.3")) == [Version("1.3")]
    assert set(bad.load()) == {Version("1.2.0")}
    assert bad.clear() == [Version("1.2.0")]
    assert bad.load() == {}
