"""What every format shares: the normalized member, name checks, link resolution, error wrappers."""

from __future__ import annotations

import contextlib
import enum
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from desktop.core.errors import UnsafeArchiveError

CHUNK: Final = 1024 * 1024
MAX_LINK_TARGET: Final = 4096
# Linux follows at most 40 symlinks in one lookup (ELOOP after that); a longer chain would not
# work at run time either, and following it without a bound costs unbounded time.
MAX_LINK_HOPS: Final = 40

DRIVE: Final = re.compile(r"^[A-Za-z]:")
SETID: Final = stat.S_ISUID | stat.S_ISGID

_SPECIAL_NAMES: Final = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}


class Kind(enum.Enum):
    """What a member makes on disk; every other type is refused by the format reader."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


@dataclass(frozen=True, slots=True)
class Member:
    """One archive member as every format reader reports it, before any check.

    `mode` holds the permission bits as stored (setuid/setgid included, so they can be
    refused); `size` is the declared size of a regular file's data; `target` is the link
    target of a symlink or hardlink.
    """

    name: str
    kind: Kind
    mode: int = 0o644
    size: int = 0
    target: str = ""


class FsError(Exception):
    """An OSError raised by our own file-system writes (as opposed to reading the archive)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class CallbackError(Exception):
    """An exception raised by a caller's callback (progress, cancel, read): passed through untouched."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def fs() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise FsError(exc) from exc


def show(name: str) -> str:
    """A member name fit for a one-line message."""
    text = repr(name)
    return text if len(text) <= 200 else text[:197] + "..."


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def unsafe(name: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {show(name)}: {why}")


def special(fmt: int) -> str:
    return f"special file ({_SPECIAL_NAMES.get(fmt, f'type {oct(fmt)}')}) refused"


def too_many_members(limit: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"archive has more than {limit} members (files and links)")


def too_many_directories(limit: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"archive has more than {limit} directories")


def too_large(limit: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"archive exceeds the total size limit of {limit} bytes")


# --------------------------------------------------------------------------- names


def split_name(name: str) -> tuple[str, ...]:
    """Check a member name and return its components ("" and "." dropped)."""
    if "\x00" in name:
        raise unsafe(name, "NUL byte in name")
    if "\\" in name:
        raise unsafe(name, "backslash in name")
    if name.startswith("/") or DRIVE.match(name):
        raise unsafe(name, "absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise unsafe(name, "'..' in path")
    return parts


def link_stays_inside(parts: tuple[str, ...], target: str) -> bool:
    """Whether a relative link at `parts` pointing to `target` stays inside the tree (lexically)."""
    stack = list(parts[:-1])
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return False
            stack.pop()
        else:
            stack.append(comp)
    return True


def resolve_inside(root: str, start: tuple[str, ...], target: str, known_dirs: set[str] | None = None) -> bool | None:
    """Whether `target`, read from a link in directory `start` below `root`, resolves inside `root`.

    Resolved against the disk, following links found on the way (non-strict, like
    `os.path.realpath`: missing components are taken lexically), but iteratively and with a
    hop limit: realpath recurses once per link in a chain. `root` must be a real path.
    Returns None when the chain is longer than MAX_LINK_HOPS. `known_dirs` holds relative
    paths already known to be real directories, which need no lstat.
    """
    stack = list(start)
    pending = target.split("/")
    pending.reverse()
    hops = 0
    while pending:
        comp = pending.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(comp)
        rel = "/".join(stack)
        if known_dirs is not None and rel in known_dirs:
            continue
        try:
            st = os.lstat(os.path.join(root, rel))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISLNK(st.st_mode):
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return None
        link = os.readlink(os.path.join(root, rel))
        stack.pop()
        if link.startswith("/"):
            return False
        more = link.split("/")
        more.reverse()
        pending.extend(more)
    return True
