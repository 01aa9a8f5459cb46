"""Failure memory: what is pinned, what backs off."""

from __future__ import annotations

import json
from pathlib import Path

from packaging.version import Version

from desktop import __version__
from desktop.core.errors import DigestMismatchError, HostGateError, ManifestError, NetworkError
from desktop.core.failures import FailureMemory, backoff_delay


def test_deterministic_failure_is_pinned_per_artefact(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    assert memory.record(Version("1.2.0"), "sha512-a", ManifestError("no entry"))
    assert memory.is_pinned(Version("1.2.0"), "sha512-a")
    assert not memory.is_pinned(Version("1.2.0"), "sha512-b"), "republished bytes are tried again"
    assert not memory.is_pinned(Version("1.3.0"), "sha512-a")


def test_digest_mismatch_pins_only_the_second_time(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    assert not memory.record(Version("1.2.0"), "sha512-a", DigestMismatchError("x"))
    assert memory.transient() is not None
    assert memory.record(Version("1.2.0"), "sha512-a", DigestMismatchError("x"))
    assert memory.is_pinned(Version("1.2.0"), "sha512-a")


def test_transient_failures_back_off_and_reset(tmp_path: Path) -> None:
    memory = FailureMemory(tmp_path / "failures.json")
    for _ in range(3):
        assert not memory.record(None, "", NetworkError("down"), now=1000.0)
    state = memory.transient()
    assert state is not None and state.count == 3 and state.next_retry == 1000.0 + backoff_delay(3)
    assert memory.pinned() == {}
    memory.record_success()
    assert memory.transient() is None


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_delay(n, base=1, cap=10) for n in range(6)] == [0, 1, 2, 4, 8, 10]


def test_host_gate_pin_expires_with_a_new_shell(tmp_path: Path) -> None:
    path = tmp_path / "failures.json"
    memory = FailureMemory(path)
    memory.record(Version("2.0.0"), "sha512-a", HostGateError("requires shell >=2"))
    assert memory.is_pinned(Version("2.0.0"), "sha512-a")
    state = json.loads(path.read_text())
    state["pinned"]["2.0.0"]["shell"] = "0.9.0"  # recorded by an older shell
    path.write_text(json.dumps(state))
    assert not memory.is_pinned(Version("2.0.0"), "sha512-a")
    assert __version__ != "0.9.0"


def test_corrupt_failures_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "failures.json"
    path.write_bytes(b"\x00{not json")
    memory = FailureMemory(path)
    assert memory.pinned() == {} and memory.transient() is None
    memory.record(None, "", NetworkError("down"))
    assert memory.transient() is not None
