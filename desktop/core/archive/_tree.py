"""The directory being filled: one checker for the members of every format, and every write.

Format readers turn their entries into `Member`s and hand them to `Tree.add` with a way to
read the data; nothing reaches the disk except through here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Final, NamedTuple

from desktop.core.archive._common import (
    CHUNK,
    DRIVE,
    SETID,
    CallbackError,
    FsError,
    Kind,
    Member,
    fs,
    link_stays_inside,
    resolve_inside,
    show,
    split_name,
    too_large,
    too_many_directories,
    too_many_members,
    unsafe,
)
from desktop.core.errors import CancelledError, UnsafeArchiveError
from desktop.core.limits import ExtractLimits

_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: Final[int] = getattr(os, "O_CLOEXEC", 0)
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
# The cache of directories known to be real is only a shortcut past lstat: past this many
# characters of paths it is dropped, so a deep, wide tree cannot make it grow without bound.
_KNOWN_DIRS_CHARS: Final = 8 * 1024 * 1024

Reader = Callable[[memoryview], int]

# Extracted versions live in the user's private data dir: nobody else needs to read them.
DIR_MODE = 0o700
EXEC_MODE = 0o700
FILE_MODE = 0o600


class Tree:
    """Checks each member against the tree built so far and the limits, then writes it."""

    def __init__(
        self,
        root: str,
        limits: ExtractLimits,
        progress: Callable[[int], None] | None,
        cancel: Callable[[], bool] | None,
        hash_files: bool = False,
    ) -> None:
        self.root = root
        self.hash_files = hash_files
        self.root_real = os.path.realpath(root)
        self.limits = limits
        self._progress = progress
        self._cancel = cancel
        self.members = 0
        self.directories = 0
        self.total = 0
        self._reported = 0
        self.open_fds: set[int] = set()
        # Relative paths of directories this extraction made (or checked). Nothing here ever
        # replaces a directory, so they stay real directories and need no second lstat.
        self.known_dirs: set[str] = set()
        self._known_chars = 0
        self._buffer: memoryview | None = None
        # With hash_files, every regular file written, by relative path, hashed as it was written
        # (memory grows with the file count, as the staging record built from it does: each
        # entry is one packed Written, 89 bytes, not five Python objects).
        self.digests: dict[str, bytes] = {}

    # -- bookkeeping

    def path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    def check_cancel(self) -> None:
        if self._cancel is None:
            return
        try:
            stop = self._cancel()
        except Exception as exc:
            raise CallbackError(exc) from exc
        if stop:
            raise CancelledError("extraction cancelled")

    def count(self, kind: Kind) -> None:
        """Count one member against its cap: directories apart from files and links."""
        self.check_cancel()
        if kind is Kind.DIR:
            self.directories += 1
            if self.directories > self.limits.max_directories:
                raise too_many_directories(self.limits.max_directories)
        else:
            self.members += 1
            if self.members > self.limits.max_members:
                raise too_many_members(self.limits.max_members)

    def check_declared(self, name: str, size: int) -> None:
        """Refuse early a member whose declared size already breaks a limit."""
        if size > self.limits.max_member_bytes:
            raise unsafe(name, f"declared size {size} exceeds the per-member limit")
        if self.total + size > self.limits.max_total_bytes:
            raise too_large(self.limits.max_total_bytes)

    def account(self, name: str, member_written: int, n: int) -> None:
        """Called before writing n more bytes: refuse them if they would break a limit."""
        if member_written + n > self.limits.max_member_bytes:
            raise unsafe(name, f"larger than the per-member limit of {self.limits.max_member_bytes} bytes")
        if self.total + n > self.limits.max_total_bytes:
            raise too_large(self.limits.max_total_bytes)

    def written(self, n: int) -> None:
        self.total += n
        if self.total - self._reported >= CHUNK:
            self.report()

    def report(self) -> None:
        if self._progress is None or self.total == self._reported:
            return
        self._reported = self.total
        try:
            self._progress(self.total)
        except Exception as exc:
            raise CallbackError(exc) from exc

    def close_all(self) -> None:
        for fd in list(self.open_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open_fds.clear()

    def buffer(self) -> memoryview:
        """One reusable chunk buffer for readers that fill memory (readinto)."""
        if self._buffer is None:
            self._buffer = memoryview(bytearray(CHUNK))
        return self._buffer

    def _know(self, rel: str) -> None:
        self._known_chars += len(rel) + 1
        if self._known_chars > _KNOWN_DIRS_CHARS:
            self.known_dirs.clear()
            self._known_chars = len(rel) + 1
        self.known_dirs.add(rel)

    # -- the one checker

    def admit(self, member: Member) -> tuple[str, ...]:
        """The checks that need no disk: count, name, mode. Returns the name's components."""
        self.count(member.kind)
        parts = split_name(member.name)
        if member.kind is not Kind.SYMLINK and member.mode & SETID:
            raise unsafe(member.name, "setuid/setgid bit")
        if member.kind is not Kind.DIR and not parts:
            raise unsafe(member.name, "name resolves to the archive root")
        return parts

    def add(self, member: Member, read: Reader | None = None) -> None:
        """Check `member` and create it; `read` fills a buffer with a regular file's next bytes."""
        name = member.name
        parts = self.admit(member)
        if member.kind is Kind.DIR:
            self.make_dir(parts, name)
        elif member.kind is Kind.SYMLINK:
            self.symlink(parts, name, member.target)
        elif member.kind is Kind.HARDLINK:
            self.hardlink(parts, name, member.target)
        else:
            self.check_declared(name, member.size)
            sink = self.open_file(parts, name, bool(member.mode & 0o111))
            if read is not None:
                sink.fill(read)
            sink.finish()

    # -- checked primitives

    def _check_parents(self, parts: tuple[str, ...], name: str, *, create: bool) -> None:
        """Every parent of `parts` must be a real directory (never a symlink); create missing ones."""
        if len(parts) < 2 or "/".join(parts[:-1]) in self.known_dirs:
            return
        for i in range(1, len(parts)):
            rel = "/".join(parts[:i])
            if rel in self.known_dirs:
                continue
            p = self.path(parts[:i])
            with fs():
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    if not create:
                        raise unsafe(name, f"parent {show(rel)} does not exist") from None
                    os.mkdir(p, DIR_MODE)
                    os.chmod(p, DIR_MODE)
                    self._know(rel)
                    continue
            if stat.S_ISLNK(st.st_mode):
                raise unsafe(name, f"parent {show(rel)} is a symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise unsafe(name, f"parent {show(rel)} is not a directory")
            self._know(rel)

    def _clear(self, parts: tuple[str, ...], name: str) -> None:
        """Make room for a non-directory member: remove an earlier file or symlink (never follow it)."""
        p = self.path(parts)
        with fs():
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                raise unsafe(name, "would replace a directory")
            os.unlink(p)
        self.digests.pop("/".join(parts), None)

    def make_dir(self, parts: tuple[str, ...], name: str) -> None:
        if not parts:
            return
        self._check_parents(parts, name, create=True)
        rel = "/".join(parts)
        if rel in self.known_dirs:
            return
        p = self.path(parts)
        with fs():
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p, DIR_MODE)
                os.chmod(p, DIR_MODE)
                self._know(rel)
                return
        if not stat.S_ISDIR(st.st_mode):
            raise unsafe(name, "directory would replace a file or symlink")
        self._know(rel)

    def open_file(self, parts: tuple[str, ...], name: str, executable: bool) -> FileSink:
        if not parts:
            raise unsafe(name, "name resolves to the archive root")
        self._check_parents(parts, name, create=True)
        path = self.path(parts)
        with fs():
            try:
                # O_EXCL never follows or reuses what is there; only a duplicate member gets here twice.
                fd = os.open(path, _CREATE, 0o600)
            except FileExistsError:
                self._clear(parts, name)
                fd = os.open(path, _CREATE, 0o600)
        self.open_fds.add(fd)
        return FileSink(self, fd, path, name, EXEC_MODE if executable else FILE_MODE, "/".join(parts))

    def symlink(self, parts: tuple[str, ...], name: str, target: str) -> None:
        if not parts:
            raise unsafe(name, "name resolves to the archive root")
        if not target:
            raise unsafe(name, "empty symlink target")
        if "\x00" in target or "\\" in target:
            raise unsafe(name, "symlink target contains NUL or backslash")
        if target.startswith("/") or DRIVE.match(target):
            raise unsafe(name, f"symlink to absolute path {show(target)}")
        if not link_stays_inside(parts, target):
            raise unsafe(name, f"symlink target {show(target)} is outside the archive")
        self._check_parents(parts, name, create=True)
        # Resolve again against the disk, following symlinks extracted so far.
        with fs():
            inside = resolve_inside(self.root_real, parts[:-1], target, self.known_dirs)
        if inside is None:
            raise unsafe(name, f"symlink target {show(target)} is a chain of too many links")
        if not inside:
            raise unsafe(name, f"symlink target {show(target)} resolves outside the archive")
        self._clear(parts, name)
        with fs():
            os.symlink(target, self.path(parts))

    def hardlink(self, parts: tuple[str, ...], name: str, linkname: str) -> None:
        if not parts:
            raise unsafe(name, "name resolves to the archive root")
        try:
            target = split_name(linkname)
        except UnsafeArchiveError:
            raise unsafe(name, f"hardlink target {show(linkname)} is outside the archive") from None
        if not target or target == parts:
            raise unsafe(name, f"invalid hardlink target {show(linkname)}")
        self._check_parents(target, name, create=False)
        with fs():
            try:
                st = os.lstat(self.path(target))
            except FileNotFoundError:
                st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise unsafe(name, f"hardlink target {show(linkname)} is not an extracted regular file")
        self._check_parents(parts, name, create=True)
        self._clear(parts, name)
        try:
            os.link(self.path(target), self.path(parts), follow_symlinks=False)
            known = self.digests.get("/".join(target))
            if known is not None:
                self.digests["/".join(parts)] = known
            return
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise FsError(exc) from exc
        # The file system refuses hardlinks: copy instead (counted like any other write).
        with fs():
            src = os.open(self.path(target), os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        self.open_fds.add(src)
        try:
            sink = self.open_file(parts, name, executable=bool(st.st_mode & 0o111))

            def read(buf: memoryview) -> int:
                with fs():
                    return os.readv(src, [buf])

            sink.fill(read)
            sink.finish()
        finally:
            self.open_fds.discard(src)
            os.close(src)


class Written(NamedTuple):
    """A regular file as extracted: what a later reader may trust while its inode and mtime are unchanged."""

    size: int
    digest: bytes  # sha256, raw
    ino: int
    mtime_ns: int

    @property
    def sha256(self) -> str:
        return self.digest.hex()

    def digest_if_unchanged(self, st: os.stat_result) -> str | None:
        """The sha256 recorded at extraction, if `st` (an lstat of the path now) is still that file."""
        same = (st.st_ino, st.st_mtime_ns, st.st_size) == (self.ino, self.mtime_ns, self.size)
        return self.sha256 if same else None

    @classmethod
    def unpack(cls, packed: bytes) -> Written:
        size, ino, mtime_ns, digest = _WRITTEN.unpack(packed)
        return cls(size, digest, ino, mtime_ns)


_WRITTEN: Final = struct.Struct("<QQq32s")


class Digests(Mapping[str, Written]):
    """Every regular file an extraction wrote, by path relative to the destination: a view of the
    extraction's own table without the wrapping directory it stripped (no second copy)."""

    def __init__(self, written: dict[str, bytes], prefix: str = "") -> None:
        self._written = written
        self._prefix = prefix

    def __getitem__(self, rel: str) -> Written:
        return Written.unpack(self._written[self._prefix + rel])

    def __iter__(self) -> Iterator[str]:
        cut = len(self._prefix)
        return (rel[cut:] for rel in self._written if rel.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class FileSink:
    """A regular file being written: counts bytes against the limits, checks cancel per chunk."""

    def __init__(self, tree: Tree, fd: int, path: str, name: str, mode: int, rel: str) -> None:
        self.tree = tree
        self.fd = fd
        self.path = path
        self.name = name
        self.mode = mode
        self.rel = rel
        self.size = 0
        self.closed = False
        self.digest = hashlib.sha256() if tree.hash_files else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            self._write_chunk(view[start : start + CHUNK])

    def _write_chunk(self, piece: memoryview) -> None:
        n_piece = len(piece)
        self.tree.check_cancel()
        self.tree.account(self.name, self.size, n_piece)  # refused before it reaches the disk
        if self.digest is not None:
            self.digest.update(piece)
        with fs():
            while piece:
                piece = piece[os.write(self.fd, piece) :]
        self.size += n_piece
        self.tree.written(n_piece)

    def fill(self, read: Reader) -> None:
        """Copy a member's data from `read` (which fills a buffer) until it reports 0 bytes."""
        buf = self.tree.buffer()
        while True:
            n = read(buf)
            if not n:
                return
            self._write_chunk(buf[:n])

    def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.tree.open_fds.discard(self.fd)
        try:
            with fs():
                if self.digest is not None:
                    st = os.fstat(self.fd)
                    self.tree.digests[self.rel] = _WRITTEN.pack(self.size, st.st_ino, st.st_mtime_ns,
                                                                self.digest.digest())
                if hasattr(os, "fchmod"):
                    os.fchmod(self.fd, self.mode)
                else:  # pragma: no cover - Windows
                    os.chmod(self.path, self.mode)
        finally:
            os.close(self.fd)
