"""The cross-process staging lock of a version store (import-cheap: the supervisor takes it too)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from desktop.core.errors import DataDirError
from desktop.core.paths import VersionStore


class Busy(Exception):
    """Another process holds the staging lock."""


@contextmanager
def stage_lock(store: VersionStore, timeout: float = 0) -> Iterator[None]:
    """The cross-process staging lock of `store`; raises Busy if another process holds it."""
    import filelock  # only writers pay for it

    store.ensure()
    lock = filelock.FileLock(str(store.lock_file), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise Busy() from None
    except OSError as exc:
        raise DataDirError(f"cannot lock {store.lock_file}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


