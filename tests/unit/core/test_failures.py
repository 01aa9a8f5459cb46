"""Failure memory: only invalid releases are pinned; transient failures (digests included) back off."""

from __future__ import annotations

import json
from pathlib import Path

from packaging.version import Version

from desktop import __version__
from desktop.core.errors import (
    CancelledError,
    DigestMismatchError,
    HostGateError,
    ManifestError,
    NetworkError,
    UnexpectedContentError,
)
from desktop.core.failures import FailureMemory, SkippedVersions
from desktop.core.policy import backoff


def test_deterministic_failure_is_pinned_per_artefact(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    assert memory.record(Version("1.2.0"), "sha512-a", ManifestError("no entry"))
    assert memory.pinned_reason(Version("1.2.0"), "sha512-a") == "no entry"
    assert memory.pinned_reason(Version("1.2.0"), "sha512-b") is None, "republished bytes are tried again"
    assert memory.pinned_reason(Version("1.3.0"), "sha512-a") is None


def test_digest_mismatches_are_never_pinned(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    for error in (DigestMismatchError("x"), DigestMismatchError("x"), UnexpectedContentError("html"),
                  DigestMismatchError("x")):
        assert not memory.record(Version("1.2.0"), "sha512-a", error)
    assert memory.pinned() == {}
    state = memory.transient()
    assert state is not None and state.count == 4


def test_cancelling_is_nobodys_failure(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    assert not memory.record(Version("1.2.0"), "a", CancelledError("quit"))
    assert memory.transient() is None and memory.pinned() == {}


def test_transient_failures_back_off_and_reset(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    for _ in range(3):
        assert not memory.record(None, "", NetworkError("down"), now=1000.0)
    state = memory.transient()
    assert state is not None and state.count == 3 and state.next_retry == 1000.0 + backoff(3)
    assert memory.pinned() == {}
    memory.record_success()
    assert memory.transient() is None


def test_host_gate_pin_expires_with_a_new_shell(tmp_path: Path) -> None:
    path = tmp_path / "failures.json"
    memory = FailureMemory(path)
    memory.record(Version("2.0.0"), "sha512-a", HostGateError("requires shell >=2"))
    assert memory.pinned_reason(Version("2.0.0"), "sha512-a")
    state = json.loads(path.read_text())
    state["pinned"]["2.0.0"]["shell"] = "0.9.0"  # recorded by an older shell
    path.write_text(json.dumps(state))
    assert memory.pinned_reason(Version("2.0.0"), "sha512-a") is None
    assert __version__ != "0.9.0"


def test_corrupt_or_wrong_typed_failures_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "failures.json"
    path.write_bytes(b"\x00{not json")
    memory = FailureMemory(path)
    assert memory.pinned() == {} and memory.transient() is None
    memory.record(None, "", NetworkError("down"))
    assert memory.transient() is not None
    path.write_text(json.dumps({"transient": {"count": "3", "next_retry": "soon"},
                                "pinned": {"1.2.0": {"time": "x", "artefact": 5}}}))
    assert memory.transient() is None
    assert memory.pinned()[Version("1.2.0")].artefact == ""
    memory.record(None, "", NetworkError("down"))
    assert memory.transient() is not None and memory.transient().count == 1  # type: ignore[union-attr]


def test_clear_forgets_pins_and_backoff(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    memory.record(Version("1.2.0"), "a", ManifestError("x"))
    memory.record(None, "", NetworkError("down"))
    assert memory.clear(Version("1.2.0")) == [Version("1.2.0")]
    assert memory.pinned() == {} and memory.transient() is None


def test_skipped_versions(tmp_path: Path) -> None:
    skipped = SkippedVersions(tmp_path / "skipped.json")
    skipped.skip(Version("1.2.0"))
    assert set(skipped.load()) == {Version("1.2.0")}
    assert skipped.unskip() == [Version("1.2.0")] and skipped.load() == {}
