"""Failure memory: transient failures back off, deterministic ones are pinned per artefact."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop import __version__
from desktop.core.errors import DesktopError, DigestMismatchError, HostGateError, InvalidReleaseError
from desktop.core.state import atomic_write_json, read_json_object
from desktop.core.versions import parse_version

BACKOFF_BASE_S = 60.0
BACKOFF_MAX_S = 6 * 3600.0
MISMATCHES_TO_PIN = 2


def backoff_delay(failures: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_MAX_S,
                  jitter: float = 0.0) -> float:
    """Seconds to wait after `failures` consecutive transient failures (exponential, capped)."""
    if failures <= 0:
        return 0.0
    delay: float = min(cap, base * 2.0 ** (failures - 1))
    return delay * (1.0 + jitter * random.random())


@dataclass(frozen=True)
class PinnedFailure:
    version: Version
    artefact: str
    reason: str
    time: float
    shell: str | None = None


@dataclass(frozen=True)
class TransientState:
    count: int
    last_error: str
    last_time: float
    next_retry: float


class FailureMemory:
    """failures.json: what failed, so the same broken artefact is never fetched again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        return read_json_object(self.path) or {}

    def pinned(self) -> dict[Version, PinnedFailure]:
        raw = self._load().get("pinned")
        result: dict[Version, PinnedFailure] = {}
        if not isinstance(raw, dict):
            return result
        for key, value in raw.items():
            version = parse_version(key)
            if version is None or not isinstance(value, dict):
                continue
            shell = value.get("shell")
            result[version] = PinnedFailure(version, str(value.get("artefact", "")),
                                            str(value.get("reason", "")), float(value.get("time", 0) or 0),
                                            shell if isinstance(shell, str) else None)
        return result

    def is_pinned(self, version: Version, artefact: str) -> bool:
        entry = self.pinned().get(version)
        if entry is None or entry.artefact != artefact:
            return False
        return entry.shell is None or entry.shell == __version__

    def transient(self) -> TransientState | None:
        raw = self._load().get("transient")
        if not isinstance(raw, dict) or not raw.get("count"):
            return None
        return TransientState(int(raw.get("count", 0)), str(raw.get("last_error", "")),
                              float(raw.get("last_time", 0)), float(raw.get("next_retry", 0)))

    def record(self, version: Version | None, artefact: str, error: DesktopError,
               now: float | None = None) -> bool:
        """Remember a failure; returns True when the artefact is now pinned (not retried)."""
        now = time.time() if now is None else now
        state = self._load()
        pin = False
        if isinstance(error, InvalidReleaseError) and version is not None:
            pin = True
            if isinstance(error, DigestMismatchError):
                # One mismatch may be a flipped bit in transit; the same mismatch twice is the artefact.
                mismatches = state.setdefault("mismatches", {})
                key = f"{version}|{artefact}"
                mismatches[key] = int(mismatches.get(key, 0)) + 1
                pin = mismatches[key] >= MISMATCHES_TO_PIN
        if pin and version is not None:
            state.setdefault("pinned", {})[str(version)] = {
                "artefact": artefact, "reason": str(error), "time": now,
                # A host-gate refusal depends on this shell: a newer shell tries the release again.
                "shell": __version__ if isinstance(error, HostGateError) else None}
        else:
            raw = state.get("transient")
            previous: dict[str, Any] = raw if isinstance(raw, dict) else {}
            count = int(previous.get("count", 0)) + 1
            state["transient"] = {"count": count, "last_error": str(error), "last_time": now,
                                  "next_retry": now + backoff_delay(count)}
        atomic_write_json(self.path, state)
        return pin

    def record_success(self) -> None:
        state = self._load()
        if state.pop("transient", None) is not None:
            atomic_write_json(self.path, state)

    def clear(self, version: Version | None = None) -> None:
        state = self._load()
        pinned = state.get("pinned")
        if isinstance(pinned, dict):
            for key in list(pinned):
                if version is None or parse_version(key) == version:
                    del pinned[key]
        if version is None:
            state.pop("mismatches", None)
        atomic_write_json(self.path, state)
