"""bad-versions.json: versions that failed to start, bounded, and never forgotten by accident.

Each entry is bounded (reason 500 characters, 20 lines x 500 characters of stderr) so a
runtime that prints megabytes before crashing cannot make the file too large to read. Every
write also refreshes a backup copy; if the file becomes unreadable the backup is used, and if
both are unreadable the list is *unknown*: every staged version that is not the last
known-good then counts as bad, so an unreadable file can never make the shell launch a
version it had marked bad.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop.core.state import Fields, ReadStatus, atomic_write_json, clip, locked, read_state
from desktop.core.text import sanitize_line
from desktop.core.versions import parse_version

MAX_REASON = 500
MAX_TAIL_LINES = 20
MAX_LINE = 500
MAX_ENTRIES = 256
UNKNOWN_REASON = "marked bad to be safe: the bad-version list was unreadable"


@dataclass(frozen=True)
class BadVersion:
    """Why one version is never launched or staged again (until cleared)."""

    version: str
    reason: str
    exit_code: int | None = None
    stderr_tail: tuple[str, ...] = ()
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "exit_code": self.exit_code, "stderr_tail": list(self.stderr_tail),
                "time": self.time}


@dataclass(frozen=True)
class BadList:
    """The loaded list; `unknown` when neither the file nor its backup could be read."""

    entries: dict[Version, BadVersion] = field(default_factory=dict)
    unknown: bool = False

    def is_bad(self, version: Version, *, trusted: Collection[Version] = ()) -> bool:
        """Whether `version` must not be launched; `trusted` versions survive an unknown list."""
        if version in self.entries:
            return True
        return self.unknown and version not in trusted

    def __contains__(self, version: object) -> bool:
        return version in self.entries


def bounded_tail(lines: Sequence[str]) -> tuple[str, ...]:
    return tuple(clip(sanitize_line(str(line)), MAX_LINE) for line in list(lines)[-MAX_TAIL_LINES:])


class BadVersions:
    """The bad list in `path` (with its backup beside it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.stem + ".backup.json")

    def load(self) -> BadList:
        main = read_state(self.path)
        if main.status is ReadStatus.OK:
            return BadList(self._parse(main.obj or {}, self.path))
        if main.status is ReadStatus.MISSING:
            return BadList()
        backup = read_state(self.backup)
        if backup.status is ReadStatus.OK:
            return BadList(self._parse(backup.obj or {}, self.backup))
        return BadList(unknown=True)

    @staticmethod
    def _parse(obj: dict[str, Any], source: Path) -> dict[Version, BadVersion]:
        result: dict[Version, BadVersion] = {}
        for key, value in obj.items():
            version = parse_version(key)
            if version is None or not isinstance(value, dict):
                continue
            fields = Fields(value, f"{source}:{key}")
            code = fields.integer("exit_code", default=0) if fields.has("exit_code") else None
            tail = [line for line in fields.sequence("stderr_tail") if isinstance(line, str)]
            result[version] = BadVersion(
                version=str(version),
                reason=clip(fields.text("reason", "unknown", max_len=1 << 20) or "unknown", MAX_REASON),
                exit_code=code,
                stderr_tail=bounded_tail(tail),
                time=fields.number("time"),
            )
        return result

    def mark(self, version: Version, reason: str, exit_code: int | None = None,
             stderr_tail: Sequence[str] = ()) -> BadVersion:
        with locked(self.path):
            entries = dict(self.load().entries)
            entry = BadVersion(str(version), clip(sanitize_line(reason), MAX_REASON), exit_code,
                               bounded_tail(stderr_tail), time.time())
            entries[version] = entry
            self._save(entries, fault="bad-mark-write")
        return entry

    def clear(self, version: Version | None = None) -> list[Version]:
        """Forget one bad version (or all); returns what was removed."""
        with locked(self.path):
            current = self.load()
            entries = dict(current.entries)
            removed = [v for v in entries if version is None or v == version]
            for v in removed:
                del entries[v]
            if removed or current.unknown:
                self._save(entries)
        return removed

    def reset_unknown(self, suspects: Sequence[Version]) -> BadList:
        """Write a readable list again after it was lost: every suspect (a staged version that is not
        the last known-good) is marked bad to be safe, so the list is known from now on."""
        now = time.time()
        entries = {v: BadVersion(str(v), UNKNOWN_REASON, None, (), now) for v in suspects}
        with locked(self.path):
            current = self.load()
            if not current.unknown:
                return current  # another shell repaired it meanwhile
            self._save(entries)
        return BadList(entries)

    def _save(self, entries: dict[Version, BadVersion], fault: str | None = None) -> None:
        newest = sorted(entries.items(), key=lambda item: item[1].time)[-MAX_ENTRIES:]
        obj = {str(v): e.to_json() for v, e in sorted(newest)}
        atomic_write_json(self.path, obj, fault=fault)
        atomic_write_json(self.backup, obj)
