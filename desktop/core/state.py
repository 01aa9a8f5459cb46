"""State files: atomic writes and typed, tolerant reads.

Every write goes temp file (same directory, 0600, never through a symlink) -> fsync ->
os.replace -> fsync of the directory, so a reader (or a process restarted after kill -9)
sees the old file or the new one, never a torn one. Every read goes through one typed
reader: a missing, empty, oversized, truncated or garbage file, a symlink where a file
should be, and fields of the wrong type all read as "nothing" / the field's default with a
warning. The user never sees a traceback from a state file.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import math
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop.core import faults
from desktop.core.errors import StateError

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 4 * 1024 * 1024
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_warned: set[tuple[str, str]] = set()


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


def ensure_dir(path: Path) -> None:
    """Create `path` (and parents) private to the user: 0700."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise StateError(f"cannot create {path}: a file is in the way") from exc
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from exc


def atomic_write_bytes(path: Path, data: bytes | Iterable[bytes], *, fault: str | None = None,
                       fault_after: str | None = None, mode: int = 0o600) -> None:
    """Replace `path` with `data` (bytes, or chunks of them) so that no reader ever sees a partial file.

    `fault` / `fault_after` name fault points (desktop.core.faults) just before the rename
    and just after it (before the directory is fsync'd).
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        ensure_dir(directory)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, mode)
        try:
            try:
                with os.fdopen(fd, "wb") as handle:
                    for chunk in ((data,) if isinstance(data, bytes) else data):
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
                if mode != 0o600:
                    os.chmod(tmp, mode)
                if fault:
                    faults.reached(fault)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            if fault_after:
                faults.reached(fault_after)
            fsync_dir(directory)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StateError(f"cannot write {path}: the disk is full") from exc
            raise
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def locked(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the cross-process lock of a state file (`<path>.lock`) for a read-modify-write: two
    shells on one data dir must not lose each other's changes."""
    import filelock  # only writers pay for it

    lock = filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise StateError(f"timed out waiting for the lock on {path}") from exc
    except OSError as exc:
        raise StateError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    try:
        yield
    finally:
        lock.release()


def atomic_write_json(path: Path, obj: object, *, compact: bool = False, **kwargs: Any) -> None:
    """Write `obj` as JSON (UTF-8, not ASCII-escaped) atomically; `compact` for large documents
    (one line, encoded as it is written: never the whole text in memory)."""
    if not compact:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"), **kwargs)
        return
    encoder = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    def chunks() -> Iterator[bytes]:
        pending: list[str] = []
        size = 0
        for piece in encoder.iterencode(obj):
            pending.append(piece)
            size += len(piece)
            if size >= 1 << 16:
                yield "".join(pending).encode("utf-8")
                pending, size = [], 0
        pending.append("\n")
        yield "".join(pending).encode("utf-8")

    atomic_write_bytes(path, chunks(), **kwargs)


class ReadStatus(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    UNUSABLE = "unusable"  # exists but cannot be read or is not a JSON object of sane size


@dataclass(frozen=True)
class StateRead:
    status: ReadStatus
    obj: dict[str, Any] | None


def read_state(path: Path, *, max_bytes: int = MAX_STATE_BYTES) -> StateRead:
    """Read a JSON-object state file without following symlinks; say whether it was usable."""
    try:
        # Non-blocking: a FIFO planted under a state file's name must not hang the shell.
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return StateRead(ReadStatus.MISSING, None)
    except NotADirectoryError:
        return StateRead(ReadStatus.MISSING, None)
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        log.warning("cannot read %s (%s); treating it as empty", path, reason)
        return StateRead(ReadStatus.UNUSABLE, None)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            log.warning("%s is not a regular file; treating it as empty", path)
            return StateRead(ReadStatus.UNUSABLE, None)
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        log.warning("cannot read %s (%s); treating it as empty", path, exc.strerror or exc)
        return StateRead(ReadStatus.UNUSABLE, None)
    if len(raw) > max_bytes:
        log.warning("%s is larger than %d bytes; treating it as empty", path, max_bytes)
        return StateRead(ReadStatus.UNUSABLE, None)
    if not raw.strip():
        log.warning("%s is empty; treating it as absent", path)
        return StateRead(ReadStatus.UNUSABLE, None)
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        log.warning("%s is not valid JSON; treating it as absent", path)
        return StateRead(ReadStatus.UNUSABLE, None)
    if not isinstance(obj, dict):
        log.warning("%s does not hold a JSON object; treating it as absent", path)
        return StateRead(ReadStatus.UNUSABLE, None)
    return StateRead(ReadStatus.OK, obj)


def read_json_object(path: Path, *, max_bytes: int = MAX_STATE_BYTES) -> dict[str, Any] | None:
    """The JSON object in `path`, or None (with a warning) if it is missing or unusable."""
    return read_state(path, max_bytes=max_bytes).obj


def remove_file(path: Path) -> None:
    """Delete `path` durably if it exists (a symlink is removed, never followed)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    fsync_dir(path.parent)


class Fields:
    """Typed access to one JSON object read from a state file.

    A field of the wrong type reads as the default, with one warning per file and field:
    `{"count": "3"}` is not a count, `{"time": true}` is not a time.
    """

    def __init__(self, obj: dict[str, Any] | None, source: Path | str) -> None:
        self.obj = obj or {}
        self.source = str(source)

    def _bad(self, key: str, expected: str) -> None:
        mark = (self.source, key)
        if mark not in _warned:
            _warned.add(mark)
            log.warning("%s: field %r is not %s; ignoring it", self.source, key, expected)

    def has(self, key: str) -> bool:
        return key in self.obj and self.obj[key] is not None

    def text(self, key: str, default: str | None = None, *, max_len: int = 4096) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or len(value) > max_len:
            self._bad(key, "a string")
            return default
        return value

    def integer(self, key: str, default: int = 0, *, minimum: int | None = None) -> int:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            self._bad(key, "a whole number" if minimum is None else f"a whole number >= {minimum}")
            return default
        return value

    def number(self, key: str, default: float = 0.0) -> float:
        value = self.obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self._bad(key, "a number")
            return default
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._bad(key, "true or false")
            return default
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._bad(key, "an object")
            return {}
        return value

    def sequence(self, key: str) -> list[Any]:
        value = self.obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self._bad(key, "a list")
            return []
        return value

    def sub(self, key: str) -> Fields:
        return Fields(self.mapping(key), f"{self.source}:{key}")


def load_fields(path: Path, *, max_bytes: int = MAX_STATE_BYTES) -> Fields:
    """Read a state file into typed fields (empty when missing or unusable)."""
    return Fields(read_json_object(path, max_bytes=max_bytes), path)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
