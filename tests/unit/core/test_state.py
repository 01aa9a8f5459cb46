"""State files: atomic writes, tolerant typed reads, the pointer and the bounded bad list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.badlist import MAX_LINE, MAX_TAIL_LINES, BadVersions
from desktop.core.errors import StateError
from desktop.core.pointer import Pointer, advance_pointer, change_pointer, read_pointer, write_pointer
from desktop.core.state import Fields, atomic_write_json, read_json_object, read_state


@pytest.mark.parametrize("content", [b"", b"   \n", b"{", b'{"version": "1.2', b"\x00\xff\xfe garbage",
                                     b"[1, 2]", b'"1.2.0"', b'{"version": "../../etc"}',
                                     b'{"version": 12}', b'{"nothing": true}', b"[" * 100_000])
def test_corrupt_pointer_reads_as_none(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "current.json"
    path.write_bytes(content)
    assert read_pointer(path) is None
    assert caplog.records, "a corrupt pointer must be logged"


def test_wrong_typed_pointer_fields_take_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    path.write_text(json.dumps({"version": "1.2.0", "known_good": "yes", "last_known_good": 7, "updated_at": "x"}))
    pointer = read_pointer(path)
    assert pointer == Pointer(Version("1.2.0"), known_good=False, last_known_good=None, updated_at=0.0)


def test_state_file_behind_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text('{"version": "9.9.9"}')
    (tmp_path / "current.json").symlink_to(target)
    assert read_pointer(tmp_path / "current.json") is None
    atomic_write_json(tmp_path / "current.json", {"version": "1.0.1"})
    assert target.read_text() == '{"version": "9.9.9"}', "the write replaced the link, not its target"


def test_oversized_state_file_reads_as_unusable(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b'{"a": "' + b"x" * (5 * 1024 * 1024) + b'"}')
    assert read_state(path).obj is None


def test_fields_are_typed() -> None:
    fields = Fields({"n": "3", "f": True, "b": 1, "s": 5, "ok": 4, "t": 1.5, "inf": float("inf")}, "test")
    assert fields.integer("n", 7) == 7 and fields.number("f", 2.0) == 2.0 and fields.flag("b") is False
    assert fields.text("s", "d") == "d" and fields.integer("ok") == 4 and fields.number("t") == 1.5
    assert fields.number("inf", 0.5) == 0.5 and fields.integer("ok", minimum=5) == 0


def test_pointer_round_trip_and_contract_keys(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    write_pointer(path, Pointer(Version("1.2.0"), known_good=True, last_known_good=Version("1.1.0")))
    raw = json.loads(path.read_text())
    assert raw["version"] == "1.2.0"
    pointer = read_pointer(path)
    assert pointer is not None
    assert (pointer.version, pointer.known_good, pointer.last_known_good) == (
        Version("1.2.0"), True, Version("1.1.0"))
    assert (path.stat().st_mode & 0o777) == 0o600


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


def test_write_into_a_missing_parent_under_a_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError):
        atomic_write_json(tmp_path / "file" / "state.json", {})


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
    entry = bad.load().entries[Version("1.2.0")]
    assert entry.exit_code == 17 and len(entry.stderr_tail) == 20 and entry.stderr_tail[-1] == "line 29"
    assert bad.clear(Version("1.3")) == [Version("1.3")]
    assert set(bad.load().entries) == {Version("1.2.0")}
    assert bad.clear() == [Version("1.2.0")]
    assert bad.load().entries == {}


def test_bad_entries_are_bounded_escaped_and_utf8(tmp_path: Path) -> None:
    bad = BadVersions(tmp_path / "bad-versions.json")
    bad.mark(Version("1.2.0"), "boom \x1b[31m\r" + "r" * 10_000, 3, ["é" * 300_000 + "\r\x1b[2J"] * 25)
    size = (tmp_path / "bad-versions.json").stat().st_size
    assert size < 40_000
    raw = (tmp_path / "bad-versions.json").read_text(encoding="utf-8")
    assert "é" in raw and "\\u00e9" not in raw, "written with ensure_ascii=False"
    entry = bad.load().entries[Version("1.2.0")]
    assert len(entry.stderr_tail) == MAX_TAIL_LINES and all(len(line) <= MAX_LINE for line in entry.stderr_tail)
    assert all("\x1b" not in line and "\r" not in line for line in (*entry.stderr_tail, entry.reason))


def test_unreadable_bad_list_falls_back_to_its_backup(tmp_path: Path) -> None:
    bad = BadVersions(tmp_path / "bad-versions.json")
    bad.mark(Version("1.2.0"), "crashed")
    (tmp_path / "bad-versions.json").write_bytes(b"\x00 torn")
    loaded = bad.load()
    assert not loaded.unknown and Version("1.2.0") in loaded


def test_bad_list_and_backup_unreadable_means_unknown(tmp_path: Path) -> None:
    bad = BadVersions(tmp_path / "bad-versions.json")
    bad.mark(Version("1.2.0"), "crashed")
    (tmp_path / "bad-versions.json").write_bytes(b"[]")
    bad.backup.write_bytes(b"{")
    loaded = bad.load()
    assert loaded.unknown
    assert loaded.is_bad(Version("1.3.0")) and not loaded.is_bad(Version("1.1.0"), trusted=[Version("1.1.0")])


@pytest.mark.parametrize("content", [b"[]", b'{"1.0.0": "oops", "x/../y": {}}'])
def test_garbage_entries_are_skipped(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad-versions.json"
    path.write_bytes(content)
    loaded = BadVersions(path).load()
    assert loaded.entries == {}


def test_missing_bad_list_is_known_empty(tmp_path: Path) -> None:
    loaded = BadVersions(tmp_path / "bad-versions.json").load()
    assert loaded.entries == {} and not loaded.unknown
