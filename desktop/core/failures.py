"""Failure memory: transient failures back off; only invalid releases are pinned, per artefact.

failures.json holds `pinned` (version -> the artefact digest whose freshly verified bytes
were an invalid release, and why) and `transient` (consecutive transient failures, the last
error, when to retry). A digest mismatch is transient (a proxy, a CDN or a torn file), so it
is never pinned. skipped-versions.json holds the versions the user chose to skip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop import __version__
from desktop.core import policy
from desktop.core.errors import DesktopError, HostGateError, NativeDepError
from desktop.core.results import FailureClass
from desktop.core.state import Fields, atomic_write_json, clip, load_fields, locked
from desktop.core.text import one_line
from desktop.core.versions import parse_version

MAX_PINNED = 256


@dataclass(frozen=True)
class PinnedFailure:
    version: Version
    artefact: str
    reason: str
    time: float
    shell: str | None = None  # set when the failure depends on this shell (host gate, native deps)


@dataclass(frozen=True)
class TransientState:
    count: int
    last_error: str
    last_time: float
    next_retry: float


class FailureMemory:
    """failures.json: what failed, so the same invalid artefact is never fetched again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _fields(self) -> Fields:
        return load_fields(self.path)

    def pinned(self) -> dict[Version, PinnedFailure]:
        fields = self._fields()
        result: dict[Version, PinnedFailure] = {}
        for key, value in fields.mapping("pinned").items():
            version = parse_version(key)
            if version is None or not isinstance(value, dict):
                continue
            entry = Fields(value, f"{self.path}:pinned:{key}")
            result[version] = PinnedFailure(version, entry.text("artefact", "") or "",
                                            entry.text("reason", "") or "", entry.number("time"),
                                            entry.text("shell"))
        return result

    def pinned_reason(self, version: Version, artefact: str) -> str | None:
        """Why this exact artefact of `version` is not fetched again, or None."""
        entry = self.pinned().get(version)
        if entry is None or entry.artefact != artefact:
            return None
        if entry.shell is not None and entry.shell != __version__:
            return None  # a newer shell may accept what this one refused
        return entry.reason

    def transient(self) -> TransientState | None:
        fields = self._fields().sub("transient")
        count = fields.integer("count", minimum=0)
        if not count:
            return None
        return TransientState(count, fields.text("last_error", "") or "", fields.number("last_time"),
                              fields.number("next_retry"))

    def record(self, version: Version | None, artefact: str, error: DesktopError,
               now: float | None = None) -> bool:
        """Remember a failure; returns True when the artefact is now pinned (not fetched again)."""
        with locked(self.path):
            now = time.time() if now is None else now
            state: dict[str, Any] = dict(self._fields().obj)
            kind = policy.classify(error)
            if kind is FailureClass.CANCELLED:
                return False
            if kind is FailureClass.DETERMINISTIC and version is not None:
                pinned = dict(self._fields().mapping("pinned"))
                pinned[str(version)] = {
                    "artefact": artefact, "reason": clip(one_line(str(error)), 500), "time": now,
                    # A host-gate or native-dep refusal depends on this shell: a newer shell tries again.
                    "shell": __version__ if isinstance(error, HostGateError | NativeDepError) else None}
                state["pinned"] = dict(sorted(pinned.items(), key=lambda kv: _time(kv[1]))[-MAX_PINNED:])
                atomic_write_json(self.path, state)
                return True
            previous = self._fields().sub("transient")
            count = previous.integer("count", minimum=0) + 1
            state["transient"] = {"count": count, "last_error": clip(one_line(str(error)), 500), "last_time": now,
                                  "next_retry": now + policy.backoff(count)}
            atomic_write_json(self.path, state)
            return False

    def record_heal(self, version: Version, artefact: str) -> int:
        """Count one re-stage of `version` whose directory stopped matching its record; returns the count."""
        with locked(self.path):
            state: dict[str, Any] = dict(self._fields().obj)
            heals = dict(self._fields().mapping("heals"))
            key = f"{version}|{artefact}"
            count = (heals[key] if isinstance(heals.get(key), int) else 0) + 1
            heals[key] = count
            state["heals"] = dict(list(heals.items())[-MAX_PINNED:])
            atomic_write_json(self.path, state)
            return count

    def record_success(self) -> None:
        with locked(self.path):
            state = dict(self._fields().obj)
            if state.pop("transient", None) is not None:
                atomic_write_json(self.path, state)

    def clear(self, version: Version | None = None) -> list[Version]:
        """Forget pinned failures (of one version or all) and the backoff; returns the versions unpinned."""
        with locked(self.path):
            state = dict(self._fields().obj)
            pinned = dict(self._fields().mapping("pinned"))
            removed = [v for k in list(pinned) if (v := parse_version(k)) is not None
                       and (version is None or v == version)]
            for key in list(pinned):
                if version is None or parse_version(key) == version:
                    del pinned[key]
            state["pinned"] = pinned
            state.pop("transient", None)
            state.pop("mismatches", None)
            atomic_write_json(self.path, state)
            return removed


class SkippedVersions:
    """skipped-versions.json: versions the user chose to skip (undone from the Updates panel)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[Version, float]:
        result: dict[Version, float] = {}
        for key, value in load_fields(self.path).obj.items():
            version = parse_version(key)
            if version is not None and isinstance(value, int | float) and not isinstance(value, bool):
                result[version] = float(value)
        return result

    def skip(self, version: Version) -> None:
        with locked(self.path):
            entries = self.load()
            entries[version] = time.time()
            atomic_write_json(self.path, {str(v): t for v, t in sorted(entries.items())})

    def unskip(self, version: Version | None = None) -> list[Version]:
        with locked(self.path):
            entries = self.load()
            removed = [v for v in entries if version is None or v == version]
            for v in removed:
                del entries[v]
            if removed:
                atomic_write_json(self.path, {str(v): t for v, t in sorted(entries.items())})
            return removed


def _time(value: object) -> float:
    if isinstance(value, dict):
        t = value.get("time")
        if isinstance(t, int | float) and not isinstance(t, bool):
            return float(t)
    return 0.0
