"""Make a freshly extracted tree durable, scoped to that tree rather than the whole machine.

Extraction never syncs: the caller decides when the version must be on stable storage
(before the pointer moves to it). `os.sync()` flushes every file system of the machine and
stalls on unrelated dirty data; `syncfs(2)` flushes only the file system holding the tree,
in one call, which lets the kernel write everything in one pass. Where syncfs is not
available, every file and directory is fsync'd, several at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, cast

from desktop.core.tree import walk

_FSYNC_WORKERS: Final = 8
_O_DIRECTORY: Final[int] = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)


def _libc_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return cast(Callable[[int], int], func)


def syncfs(path: Path | str) -> bool:
    """Flush the file system holding `path` (Linux syncfs); False where that is not available."""
    func = _libc_syncfs()
    if func is None:
        return False
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY)
    try:
        if func(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)
    return True


def _fsync_path(path: str, directory: bool) -> None:
    flags = os.O_RDONLY | _O_NOFOLLOW | (_O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path | str) -> None:
    """fsync every regular file, then every directory (deepest first), then `root` itself."""
    files: list[str] = []
    dirs: list[str] = []
    for entry in walk(root, sort=False):
        if stat.S_ISREG(entry.st.st_mode):
            files.append(entry.path)
        elif stat.S_ISDIR(entry.st.st_mode):
            dirs.append(entry.path)
    # fsync waits for the device; several in flight let it write them in one batch.
    with ThreadPoolExecutor(max_workers=_FSYNC_WORKERS) as pool:
        for done in pool.map(lambda p: _fsync_path(p, False), files):
            del done
    for path in reversed(dirs):  # parents come before children in walk order
        _fsync_path(path, True)
    _fsync_path(os.fspath(root), True)


def make_durable(root: Path | str) -> str:
    """Put everything under `root` on stable storage; returns the method used ("syncfs" or "fsync").

    Does not sync `root`'s parent directory: a caller that renames `root` into place syncs
    that directory after the rename.
    """
    with contextlib.suppress(OSError):
        if syncfs(root):
            return "syncfs"
    fsync_tree(root)
    return "fsync"
