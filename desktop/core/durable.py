"""Making a freshly written tree durable before it becomes launchable.

`os.sync()` flushes every filesystem on the machine and stalls on unrelated dirty data. The
version only needs its own filesystem flushed: Linux's syncfs(2) on a descriptor inside the
tree does exactly that. Elsewhere every file and directory of the tree is fsync'd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from desktop.core.tree import walk

log = logging.getLogger(__name__)

_syncfs = None
if sys.platform.startswith("linux"):
    try:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
        _syncfs = _libc.syncfs
        _syncfs.argtypes = [ctypes.c_int]
        _syncfs.restype = ctypes.c_int
    except (OSError, AttributeError):
        _syncfs = None


def make_durable(root: Path) -> None:
    """Flush everything written under `root` to stable storage (raises OSError on failure)."""
    if _syncfs is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
        log.info("syncfs failed; fsyncing %s file by file", root)
    for entry in walk(root, sort=False):
        if entry.is_file or entry.is_dir:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
