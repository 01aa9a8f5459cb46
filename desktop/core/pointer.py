"""current.json: which staged version to launch, and what is known about it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop.core.errors import StateError
from desktop.core.state import Fields, ReadStatus, atomic_write_json, read_state, remove_file
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pointer:
    """The staged version to launch.

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
    def from_json(cls, obj: dict[str, Any], source: str = "current.json") -> Pointer | None:
        fields = Fields(obj, source)
        version = parse_version(fields.text("version"))
        if version is None:
            return None
        lkg = parse_version(fields.text("last_known_good")) if fields.has("last_known_good") else None
        return cls(
            version=version,
            known_good=fields.flag("known_good"),
            last_known_good=lkg if lkg != version else None,
            updated_at=fields.number("updated_at"),
        )


def read_pointer(path: Path) -> Pointer | None:
    """The pointer, or None when there is none (or it is unusable)."""
    read = read_state(path)
    if read.status is not ReadStatus.OK or read.obj is None:
        return None
    pointer = Pointer.from_json(read.obj, str(path))
    if pointer is None:
        log.warning("%s names no valid version; ignoring it", path)
    return pointer


def write_pointer(path: Path, pointer: Pointer | None) -> None:
    """Point at `pointer`, or remove the pointer (launch the bundled runtime)."""
    if pointer is None:
        remove_file(path)
        return
    if not pointer.updated_at:
        pointer = replace(pointer, updated_at=time.time())
    atomic_write_json(path, pointer.to_json(), fault_after="after-pointer")


def change_pointer(path: Path, change: Callable[[Pointer | None], Pointer | None]) -> Pointer | None:
    """Read-modify-write the pointer under a cross-process lock; `change` returns the new value.

    Returning the pointer it was given (the same object) leaves the file untouched.
    """
    import filelock  # only writers pay for it

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
    except OSError as exc:
        raise StateError(f"cannot lock {path}: {exc.strerror or exc}") from exc


def move_pointer_if(path: Path, expected: Version, new: Pointer | None) -> bool:
    """Replace the pointer only if it still names `expected` (a stage may have moved it); True if moved."""
    moved = False

    def change(now: Pointer | None) -> Pointer | None:
        nonlocal moved
        if now is None or now.version != expected:
            return now
        moved = True
        return new

    change_pointer(path, change)
    return moved


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
