"""State files: atomic writes, tolerant reads, the pointer and the bad-version list.

Every write goes temp file (same directory) -> fsync -> os.replace -> fsync of the
directory, so a reader (or a process restarted after kill -9) sees the old file or
the new one, never a torn one. A missing, empty, truncated or garbage file reads as
"nothing" with a warning: the user never sees a crash from a state file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
from packaging.version import Version

from desktop.core.errors import StateError
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 4 * 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that no reader ever sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def atomic_write_json(path: Path, obj: object) -> None:
    """Write `obj` as JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None (with a warning) if it is missing or unusable."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s); treating it as empty", path, exc)
        return None
    if len(raw) > MAX_STATE_BYTES:
        log.warning("%s is too large; treating it as empty", path)
        return None
    if not raw.strip():
        log.warning("%s is empty; treating it as absent", path)
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        log.warning("%s is not valid JSON; treating it as absent", path)
        return None
    if not isinstance(obj, dict):
        log.warning("%s does not hold a JSON object; treating it as absent", path)
        return None
    return obj


def remove_file(path: Path) -> None:
    """Delete `path` durably if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Pointer:
    """current.json: the staged version to launch and what is known about it.

    `known_good` becomes true after the version's first healthy start ("commit");
    `last_known_good` is the previous committed version, the rollback target.
    """

    version: Version
    known_good: bool = False
    last_known_good: Version | None = None
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "known_good": self.known_good,
            "last_known_good": str(self.last_known_good) if self.last_known_good else None,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Pointer | None:
        version = parse_version(obj.get("version"))
        if version is None:
            return None
        lkg_raw = obj.get("last_known_good")
        lkg = parse_version(lkg_raw) if lkg_raw is not None else None
        updated = obj.get("updated_at")
        return cls(
            version=version,
            known_good=obj.get("known_good") is True,
            last_known_good=lkg if lkg != version else None,
            updated_at=float(updated) if isinstance(updated, int | float) else 0.0,
        )


def read_pointer(path: Path) -> Pointer | None:
    """The pointer, or None when there is none (or it is unreadable)."""
    obj = read_json_object(path)
    if obj is None:
        return None
    pointer = Pointer.from_json(obj)
    if pointer is None:
        log.warning("%s names no valid version; ignoring it", path)
    return pointer


def write_pointer(path: Path, pointer: Pointer | None) -> None:
    """Point at `pointer`, or remove the pointer (launch the bundled runtime)."""
    if pointer is None:
        remove_file(path)
        return
    if not pointer.updated_at:
        pointer = Pointer(pointer.version, pointer.known_good, pointer.last_known_good, time.time())
    atomic_write_json(path, pointer.to_json())


def change_pointer(path: Path, change: Callable[[Pointer | None], Pointer | None]) -> Pointer | None:
    """Read-modify-write the pointer under a cross-process lock; `change` returns the new value.

    Returning the pointer it was given (the same object) leaves the file untouched.
    """
    lock = filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=30)
    try:
        with lock:
            current = read_pointer(path)
            new = change(current)
            if new is not current:
                write_pointer(path, new)
            return new
    except filelock.Timeout as exc:
        raise StateError(f"timed out waiting for the lock on {path}") from exc


def advance_pointer(current: Pointer | None, new_version: Version) -> Pointer:
    """The pointer after staging `new_version`: the old committed version becomes the fallback."""
    if current is None:
        lkg = None
    elif current.known_good:
        lkg = current.version
    else:
        lkg = current.last_known_good
    if lkg == new_version:
        lkg = None
    return Pointer(version=new_version, known_good=False, last_known_good=lkg, updated_at=time.time())


@dataclass(frozen=True)
class BadVersion:
    """Why one version is never launched or staged again."""

    version: str
    reason: str
    exit_code: int | None = None
    stderr_tail: list[str] = field(default_factory=list)
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "exit_code": self.exit_code,
            "stderr_tail": list(self.stderr_tail),
            "time": self.time,
        }


class BadVersions:
    """bad-versions.json: a JSON object keyed by normalized version string."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[Version, BadVersion]:
        obj = read_json_object(self.path) or {}
        result: dict[Version, BadVersion] = {}
        for key, value in obj.items():
            version = parse_version(key)
            if version is None or not isinstance(value, dict):
                continue
            tail = value.get("stderr_tail")
            code = value.get("exit_code")
            when = value.get("time")
            result[version] = BadVersion(
                version=str(version),
                reason=str(value.get("reason", "unknown")),
                exit_code=code if isinstance(code, int) else None,
                stderr_tail=[str(x) for x in tail] if isinstance(tail, list) else [],
                time=float(when) if isinstance(when, int | float) else 0.0,
            )
        return result

    def contains(self, version: Version) -> bool:
        return version in self.load()

    def mark(self, version: Version, reason: str, exit_code: int | None = None,
             stderr_tail: list[str] | None = None) -> BadVersion:
        entries = self.load()
        entry = BadVersion(str(version), reason, exit_code, list(stderr_tail or [])[-20:], time.time())
        entries[version] = entry
        self._save(entries)
        return entry

    def clear(self, version: Version | None = None) -> list[Version]:
        """Forget one bad version (or all); returns what was removed."""
        entries = self.load()
        removed = [v for v in entries if version is None or v == version]
        for v in removed:
            del entries[v]
        if removed:
            self._save(entries)
        return removed

    def _save(self, entries: dict[Version, BadVersion]) -> None:
        atomic_write_json(self.path, {str(v): e.to_json() for v, e in sorted(entries.items())})
