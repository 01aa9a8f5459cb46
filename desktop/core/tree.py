"""Walking and removing directory trees without recursion and without following links.

Trees under the data dir come from untrusted archives: one nested 1,200 directories deep
makes Python 3.11's recursive `os.walk` and `shutil.rmtree` raise RecursionError. Every
walk and removal in the core goes through here instead.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TreeEntry:
    """One entry below a walked root: its relative POSIX path and its lstat result."""

    rel: str
    path: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


def walk(root: Path | str, *, sort: bool = True) -> Iterator[TreeEntry]:
    """Every entry below `root` (not `root` itself), parents before children; links not followed.

    With `sort`, entries come in a stable order (names sorted within each directory, each
    directory's own entries before those of its subdirectories' contents).
    """
    top = os.fspath(root)
    pending: list[tuple[str, str]] = [(top, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as it:
            entries = list(it)
        if sort:
            entries.sort(key=lambda e: e.name)
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            rel = f"{prefix}{entry.name}"
            yield TreeEntry(rel, entry.path, st)
            if stat.S_ISDIR(st.st_mode):
                subdirs.append((entry.path, rel + "/"))
        pending.extend(reversed(subdirs))


def remove_tree(path: Path | str) -> None:
    """Remove a file, a link or a whole directory tree, iteratively; links are removed, never followed.

    Raises OSError when something cannot be removed (for example a directory owned by root).
    A missing `path` is not an error.
    """
    top = os.fspath(path)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(top)
        return
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        directory, emptied = stack.pop()
        if emptied:
            _retry_writable(os.rmdir, directory)
            continue
        stack.append((directory, True))
        with os.scandir(directory) as it:
            entries = list(it)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                _retry_writable(os.unlink, entry.path)


def remove_tree_quietly(path: Path | str) -> bool:
    """`remove_tree`, reporting failure as False instead of raising."""
    try:
        remove_tree(path)
    except OSError:
        return False
    return True


def _retry_writable(op: object, target: str) -> None:
    """Run `op(target)`; on EACCES/EPERM make the parent writable by its owner once and retry.

    A runtime may leave read-only directories in its own version directory.
    """
    assert callable(op)
    try:
        op(target)
    except FileNotFoundError:
        return
    except PermissionError:
        parent = os.path.dirname(target) or "."
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IRWXU)
        try:
            op(target)
        except FileNotFoundError:
            return


def tree_size(root: Path | str) -> tuple[int, int]:
    """(number of regular files, their total size) below `root`."""
    files = total = 0
    for entry in walk(root, sort=False):
        if entry.is_file:
            files += 1
            total += entry.st.st_size
    return files, total
