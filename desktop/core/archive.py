"""Safe extraction of untrusted archives (.tar.gz, .zip, .7z).

``safe_extract`` unpacks a downloaded runtime package into a directory that does not exist
yet. Members are checked one by one and written into a temporary directory beside the
destination, which is renamed into place once the whole archive was read, and walked a
last time there. On any failure (unsafe member, corrupt or truncated archive, limit
exceeded, cancel, disk full, I/O error) both the temporary directory and the destination
are removed: nothing is left behind.

Attacks refused (``UnsafeArchiveError``, naming the member), and why:

* Absolute names (``/etc/x``, ``C:x``) and names with a ``..`` component: they would write
  outside the destination ("zip slip"). ``..`` is refused even when it would cancel out
  lexically (``a/../b``), because ``a`` may be a symlink extracted earlier.
* Names with a backslash or a NUL byte: they mean a different path on Windows or to C code
  than to Python on Linux. (zipfile silently truncates names at NUL; the original name is
  checked.)
* Devices, FIFOs, sockets, sparse and unknown member types: a runtime package has no use
  for them and they are a classic way to reach hardware or to block the extractor.
* setuid / setgid bits: an archive must not create privilege-raising programs; such a
  member is refused outright rather than silently stripped.
* Symlinks with an absolute target, or whose target resolves outside the root (resolved
  relative to the link's own directory, lexically in the archive namespace and then again
  against what is already on disk, so chains through earlier symlinks are followed).
* Hardlinks whose target is outside, is the link itself, or is not an already-extracted
  regular file (a hardlink to ``/etc/passwd`` or to a symlink would let a later member
  write through it).
* Members whose parent path passes through a symlink extracted earlier (the classic
  ``a/b -> ..`` then ``a/b/c -> ../../x`` attack, or ``d -> /etc`` then ``d/passwd``):
  every parent component is checked with ``lstat`` before anything is written, and
  missing parents are created as real directories.
* Duplicated members that would write through a symlink planted by an earlier member:
  the existing entry is removed first and files are created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a write never follows a link. A member that would
  replace a directory with something else (or the reverse) is refused.
* Archive bombs: the number of members, the bytes written per member and in total are
  capped (``ExtractLimits``). Declared sizes are checked up front where the format gives
  them, but the bytes actually written are what is counted, chunk by chunk (1 MiB), so a
  lying header cannot fill the disk: extraction stops before writing past the limit.
  Metadata that libraries would load whole into memory is bounded first: tar pax / GNU
  long-name headers (1 MiB each), the decompressed tar stream as a whole, and the zip
  entry count and central-directory size (read from the end record before zipfile parses
  the central directory).
* Corrupt, truncated or undecodable archives raise ``UnsafeArchiveError`` with a one-line
  message, never a raw tarfile/zipfile/py7zr exception. Gzip streams are decoded with
  ``gzip.GzipFile`` and read by tarfile in streaming mode ``r|``: tarfile's own ``r|gz``
  checks neither the gzip CRC nor the length trailer, so a truncated or altered stream
  would go unnoticed. tarfile also stops silently at a header it cannot parse, so what
  follows the end-of-archive marker must be zero padding.
* Defence in depth: once the tree is in its final place (after stripping a wrapping
  directory, which changes what ``..`` in a link means), a final walk resolves every
  symlink and refuses the archive (removing ``dest``) if any of them points outside
  ``dest``, or if any special file or setuid/setgid bit is present.

Not taken from the archive: owners, groups, mtimes, and permissions beyond the
executable bit. Directories are 0o755, files 0o755 when any exec bit was set, else 0o644.

Formats:

* tar.gz: ``tarfile`` in streaming mode over ``gzip.GzipFile``; the archive is read once
  and never held in memory; members are extracted one by one by this module (never
  ``extractall``: the extraction filters of Python 3.11.7 have known bypasses).
* zip: ``zipfile``; members are streamed in chunks.
* 7z: ``py7zr`` 1.1.4 decodes, but writes nothing itself: it is given a ``WriterFactory``
  whose writers go through the same checked file creation and byte counting as the other
  formats. Names, types, modes and declared sizes (from ``list()``) are checked before
  decoding starts; duplicated names are refused. py7zr decodes in blocks of up to its own
  memory limit (128 MB at most), which are then written in 1 MiB chunks.

If, after extraction, the root holds exactly one entry and it is a real directory (not a
symlink, not named ``runtime.json``), its contents become the root (npm's ``package/``).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

import py7zr
from py7zr.exceptions import DecompressionBombError
from py7zr.py7zr import ArchiveFile

from desktop.core.errors import CancelledError, DesktopError, DiskSpaceError, UnsafeArchiveError
from desktop.core.limits import ExtractLimits

__all__ = ["DEFAULT_LIMITS", "ExtractLimits", "detect_format", "safe_extract"]

CHUNK: Final = 1024 * 1024
MAX_LINK_TARGET: Final = 4096
MAX_TAR_TRAILER: Final = 16 * 1024 * 1024
MAX_TAR_META: Final = 1024 * 1024  # pax / GNU long-name headers are read into memory by tarfile
TAR_OVERHEAD_PER_MEMBER: Final = 8 * 1024  # header, pax records, padding
ZIP_CD_BYTES_PER_MEMBER: Final = 1024

_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06")
_7Z_MAGIC: Final = b"7z\xbc\xaf\x27\x1c"
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
_SETID: Final = stat.S_ISUID | stat.S_ISGID
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_NAME_ERRORS: Final = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: Final[int] = getattr(os, "O_CLOEXEC", 0)


DEFAULT_LIMITS: Final = ExtractLimits()


def detect_format(path: Path) -> str:
    """Return "tar.gz", "zip" or "7z" from the file's magic bytes (the name is not trusted)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_GZIP_MAGIC):
        return "tar.gz"
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    if head.startswith(_7Z_MAGIC):
        return "7z"
    raise UnsafeArchiveError("unsupported archive format")


# --------------------------------------------------------------------------- errors


class _FsError(Exception):
    """An OSError raised by our own file-system writes (as opposed to reading the archive)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _CallbackError(Exception):
    """An exception raised by the caller's progress/cancel callback, passed through untouched."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _fs() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _FsError(exc) from exc


def _show(name: str) -> str:
    """A member name fit for a one-line message."""
    text = repr(name)
    return text if len(text) <= 200 else text[:197] + "..."


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _unsafe(name: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {_show(name)}: {why}")


_SPECIAL_NAMES: Final = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}
_TAR_SPECIAL_NAMES: Final = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


def _special(fmt: int) -> str:
    return f"special file ({_SPECIAL_NAMES.get(fmt, f'type {oct(fmt)}')}) refused"


# --------------------------------------------------------------------------- names


def _split_name(name: str) -> tuple[str, ...]:
    """Check a member name and return its components ("" and "." dropped)."""
    if "\x00" in name:
        raise _unsafe(name, "NUL byte in name")
    if "\\" in name:
        raise _unsafe(name, "backslash in name")
    if name.startswith("/") or _DRIVE.match(name):
        raise _unsafe(name, "absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _unsafe(name, "'..' in path")
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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------- writing


class _Tree:
    """The directory being filled: every write goes through here and is checked and counted."""

    def __init__(
        self,
        root: str,
        limits: ExtractLimits,
        progress: Callable[[int], None] | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        self.root = root
        self.root_real = os.path.realpath(root)
        self.limits = limits
        self._progress = progress
        self._cancel = cancel
        self.members = 0
        self.total = 0
        self._reported = 0
        self.open_fds: set[int] = set()
        # Directories already known to be real directories made by this extraction. Nothing
        # here ever replaces a directory, so they stay that way and need no second lstat.
        self._known_dirs: set[tuple[str, ...]] = set()

    # -- bookkeeping

    def path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    def check_cancel(self) -> None:
        if self._cancel is None:
            return
        try:
            stop = self._cancel()
        except Exception as exc:
            raise _CallbackError(exc) from exc
        if stop:
            raise CancelledError("extraction cancelled")

    def begin_member(self) -> None:
        self.check_cancel()
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchiveError(f"archive has more than {self.limits.max_members} members")

    def check_declared(self, name: str, size: int) -> None:
        """Refuse early a member whose declared size already breaks a limit."""
        if size > self.limits.max_member_bytes:
            raise _unsafe(name, f"declared size {size} exceeds the per-member limit")
        if self.total + size > self.limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive exceeds the total size limit of {self.limits.max_total_bytes} bytes"
            )

    def account(self, name: str, member_written: int, n: int) -> None:
        """Called before writing n more bytes: refuse them if they would break a limit."""
        if member_written + n > self.limits.max_member_bytes:
            raise _unsafe(name, f"larger than the per-member limit of {self.limits.max_member_bytes} bytes")
        if self.total + n > self.limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive exceeds the total size limit of {self.limits.max_total_bytes} bytes"
            )

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
            raise _CallbackError(exc) from exc

    def close_all(self) -> None:
        for fd in list(self.open_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open_fds.clear()

    # -- checked primitives

    def _check_parents(self, parts: tuple[str, ...], name: str, *, create: bool) -> None:
        """Every parent of `parts` must be a real directory (never a symlink); create missing ones."""
        for i in range(1, len(parts)):
            key = parts[:i]
            if key in self._known_dirs:
                continue
            p = self.path(key)
            with _fs():
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    if not create:
                        raise _unsafe(name, f"parent {_show('/'.join(key))} does not exist") from None
                    os.mkdir(p, 0o755)
                    os.chmod(p, 0o755)
                    self._known_dirs.add(key)
                    continue
            if stat.S_ISLNK(st.st_mode):
                raise _unsafe(name, f"parent {_show('/'.join(key))} is a symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise _unsafe(name, f"parent {_show('/'.join(key))} is not a directory")
            self._known_dirs.add(key)

    def _clear(self, parts: tuple[str, ...], name: str) -> None:
        """Make room for a non-directory member: remove an earlier file or symlink (never follow it)."""
        p = self.path(parts)
        with _fs():
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                raise _unsafe(name, "would replace a directory")
            os.unlink(p)

    def make_dir(self, parts: tuple[str, ...], name: str) -> None:
        if not parts:
            return
        self._check_parents(parts, name, create=True)
        p = self.path(parts)
        with _fs():
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p, 0o755)
                os.chmod(p, 0o755)
                self._known_dirs.add(parts)
                return
        if not stat.S_ISDIR(st.st_mode):
            raise _unsafe(name, "directory would replace a file or symlink")
        self._known_dirs.add(parts)

    def open_file(self, parts: tuple[str, ...], name: str, executable: bool) -> _FileSink:
        if not parts:
            raise _unsafe(name, "name resolves to the archive root")
        self._check_parents(parts, name, create=True)
        path = self.path(parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        with _fs():
            try:
                # O_EXCL never follows or reuses what is there; only a duplicate member gets here twice.
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                self._clear(parts, name)
                fd = os.open(path, flags, 0o600)
        self.open_fds.add(fd)
        return _FileSink(self, fd, path, name, 0o755 if executable else 0o644)

    def symlink(self, parts: tuple[str, ...], name: str, target: str) -> None:
        if not parts:
            raise _unsafe(name, "name resolves to the archive root")
        if not target:
            raise _unsafe(name, "empty symlink target")
        if "\x00" in target or "\\" in target:
            raise _unsafe(name, "symlink target contains NUL or backslash")
        if target.startswith("/") or _DRIVE.match(target):
            raise _unsafe(name, f"symlink to absolute path {_show(target)}")
        if not link_stays_inside(parts, target):
            raise _unsafe(name, f"symlink target {_show(target)} is outside the archive")
        self._check_parents(parts, name, create=True)
        # Resolve again against the disk, following symlinks extracted so far.
        resolved = os.path.realpath(os.path.join(self.path(parts[:-1]), target))
        if not _inside(resolved, self.root_real):
            raise _unsafe(name, f"symlink target {_show(target)} resolves outside the archive")
        self._clear(parts, name)
        with _fs():
            os.symlink(target, self.path(parts))

    def hardlink(self, parts: tuple[str, ...], name: str, linkname: str) -> None:
        if not parts:
            raise _unsafe(name, "name resolves to the archive root")
        try:
            target = _split_name(linkname)
        except UnsafeArchiveError:
            raise _unsafe(name, f"hardlink target {_show(linkname)} is outside the archive") from None
        if not target or target == parts:
            raise _unsafe(name, f"invalid hardlink target {_show(linkname)}")
        self._check_parents(target, name, create=False)
        with _fs():
            try:
                st = os.lstat(self.path(target))
            except FileNotFoundError:
                st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise _unsafe(name, f"hardlink target {_show(linkname)} is not an extracted regular file")
        self._check_parents(parts, name, create=True)
        self._clear(parts, name)
        try:
            os.link(self.path(target), self.path(parts), follow_symlinks=False)
            return
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise _FsError(exc) from exc
        # The file system refuses hardlinks: copy instead (counted like any other write).
        with _fs():
            src = os.open(self.path(target), os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        self.open_fds.add(src)
        try:
            sink = self.open_file(parts, name, executable=bool(st.st_mode & 0o111))
            while True:
                with _fs():
                    chunk = os.read(src, CHUNK)
                if not chunk:
                    break
                sink.write(chunk)
            sink.finish()
        finally:
            self.open_fds.discard(src)
            os.close(src)


class _FileSink:
    """A regular file being written: counts bytes against the limits, checks cancel per chunk."""

    def __init__(self, tree: _Tree, fd: int, path: str, name: str, mode: int) -> None:
        self.tree = tree
        self.fd = fd
        self.path = path
        self.name = name
        self.mode = mode
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            n_piece = len(piece)
            self.tree.check_cancel()
            self.tree.account(self.name, self.size, n_piece)  # refused before it reaches the disk
            with _fs():
                while piece:
                    piece = piece[os.write(self.fd, piece) :]
            self.size += n_piece
            self.tree.written(n_piece)

    def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.tree.open_fds.discard(self.fd)
        try:
            with _fs():
                if hasattr(os, "fchmod"):
                    os.fchmod(self.fd, self.mode)
                else:  # pragma: no cover - Windows
                    os.chmod(self.path, self.mode)
        finally:
            os.close(self.fd)


def _copy_stream(read: Callable[[int], bytes], sink: _FileSink) -> None:
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        sink.write(chunk)
    sink.finish()


# --------------------------------------------------------------------------- tar.gz


_TAR_META_TYPES: Final = frozenset({
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
})


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads pax and GNU long-name headers whole into memory: refuse huge ones first."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _TAR_META_TYPES and info.size > MAX_TAR_META:
            raise UnsafeArchiveError(f"tar extended header of {info.size} bytes refused")
        return info


class _CappedReader:
    """The decompressed tar stream, refused once it is far larger than the limits allow.

    Member data is counted exactly by the writers; this also bounds what is decompressed
    around it (headers, padding, whatever tarfile skips), so any gzip bomb costs bounded CPU.
    """

    def __init__(self, src: gzip.GzipFile, cap: int) -> None:
        self._src = src
        self._cap = cap
        self._count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._src.read(size)
        self._count += len(data)
        if self._count > self._cap:
            raise UnsafeArchiveError("tar stream is larger than the extraction limits allow")
        return data

    def write(self, b: bytes, /) -> object:
        raise OSError(errno.EBADF, "read-only stream")

    def tell(self) -> int:
        return self._count

    def seek(self, pos: int, /) -> object:
        raise OSError(errno.ESPIPE, "stream is not seekable")

    def close(self) -> None:
        return None


def _extract_tar(archive: Path, tree: _Tree) -> None:
    limits = tree.limits
    cap = limits.max_total_bytes + limits.max_members * TAR_OVERHEAD_PER_MEMBER + MAX_TAR_TRAILER
    with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        stream_in = _CappedReader(gz, cap)
        with tarfile.open(fileobj=stream_in, mode="r|", tarinfo=_BoundedTarInfo) as tf:
            for member in tf:
                # Streaming tarfile keeps every TarInfo it has read: drop them, or memory grows
                # with the member count (tens of MB for a large runtime).
                tf.members.clear()  # type: ignore[attr-defined]
                name = member.name
                tree.begin_member()
                parts = _split_name(name)
                if member.issym():
                    tree.symlink(parts, name, member.linkname)
                    continue
                if member.mode & _SETID:
                    raise _unsafe(name, "setuid/setgid bit")
                if member.isdir():
                    tree.make_dir(parts, name)
                elif member.islnk():
                    tree.hardlink(parts, name, member.linkname)
                elif member.isreg():
                    if member.issparse():
                        raise _unsafe(name, "sparse files are not supported")
                    tree.check_declared(name, member.size)
                    src = tf.extractfile(member)
                    if src is None:  # pragma: no cover - isreg() members always have data
                        raise _unsafe(name, "no data")
                    with src:
                        _copy_stream(src.read, tree.open_file(parts, name, bool(member.mode & 0o111)))
                else:
                    kind = _TAR_SPECIAL_NAMES.get(member.type, f"tar type {member.type!r}")
                    raise _unsafe(name, f"special file ({kind}) refused")
            stream = tf.fileobj
            if stream is None:  # pragma: no cover
                return
            # tarfile stops silently at a header it cannot parse; real archives end with zero blocks.
            left = MAX_TAR_TRAILER
            while True:
                tail = stream.read(CHUNK)
                if not tail:
                    break
                left -= len(tail)
                if left < 0 or tail.count(0) != len(tail):
                    raise UnsafeArchiveError("corrupt tar archive: data after the end-of-archive marker")


# --------------------------------------------------------------------------- zip


def _zip_precheck(archive: Path, limits: ExtractLimits) -> None:
    """Read the end-of-central-directory record before zipfile loads the whole central directory.

    zipfile reads the central directory into memory and makes one object per entry: refuse
    an entry count over the limit, or a central directory far larger than it could need.
    Anything unparsable is left to zipfile, which reports it.
    """
    with open(archive, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_len = min(size, 22 + 0xFFFF + 20)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or len(tail) - pos < 22:
            return
        entries, cd_size = struct.unpack("<HL", tail[pos + 10 : pos + 16])
        if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and pos >= 20 and tail[pos - 20 : pos - 16] == b"PK\x06\x07":
            (z64_offset,) = struct.unpack("<Q", tail[pos - 12 : pos - 4])
            fh.seek(z64_offset)
            record = fh.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                entries, cd_size = struct.unpack("<QQ", record[32:48])
    if entries > limits.max_members:
        raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
    if cd_size > limits.max_members * ZIP_CD_BYTES_PER_MEMBER + CHUNK:
        raise UnsafeArchiveError(f"zip central directory of {cd_size} bytes refused")


def _extract_zip(archive: Path, tree: _Tree) -> None:
    _zip_precheck(archive, tree.limits)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > tree.limits.max_members:
            raise UnsafeArchiveError(f"archive has more than {tree.limits.max_members} members")
        declared = 0
        for info in infos:
            if info.file_size > tree.limits.max_member_bytes:
                raise _unsafe(info.orig_filename, f"declared size {info.file_size} exceeds the per-member limit")
            declared += info.file_size
        if declared > tree.limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive exceeds the total size limit of {tree.limits.max_total_bytes} bytes"
            )
        for info in infos:
            name = info.orig_filename
            tree.begin_member()
            parts = _split_name(name)
            if info.flag_bits & 0x1:
                raise _unsafe(name, "encrypted members are not supported")
            mode = info.external_attr >> 16
            fmt = stat.S_IFMT(mode)
            if fmt == stat.S_IFLNK:
                kind = "symlink"
            elif fmt == stat.S_IFDIR:
                kind = "dir"
            elif fmt == stat.S_IFREG:
                kind = "file"
            elif fmt == 0:
                kind = "dir" if name.endswith("/") else "file"
            else:
                raise _unsafe(name, _special(fmt))
            if kind != "dir" and name.endswith("/"):
                raise _unsafe(name, "non-directory member with a directory name")
            if kind != "symlink" and mode & _SETID:
                raise _unsafe(name, "setuid/setgid bit")
            if kind == "dir":
                if info.file_size:
                    raise _unsafe(name, "directory member with content")
                tree.make_dir(parts, name)
            elif kind == "symlink":
                with zf.open(info) as src:
                    raw = src.read(MAX_LINK_TARGET + 1)
                if len(raw) > MAX_LINK_TARGET:
                    raise _unsafe(name, "symlink target too long")
                try:
                    target = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _unsafe(name, "symlink target is not UTF-8") from None
                tree.symlink(parts, name, target)
            else:
                tree.check_declared(name, info.file_size)
                sink = tree.open_file(parts, name, bool(mode & 0o111))
                with zf.open(info) as src:
                    _copy_stream(src.read, sink)


# --------------------------------------------------------------------------- 7z


@dataclass
class _Planned:
    name: str
    parts: tuple[str, ...]
    kind: str  # "file" | "symlink"
    executable: bool


class _WriteOnlyIO(py7zr.Py7zIO):
    """What py7zr needs from a sink it only writes to."""

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        return None


class _SevenZipFileWriter(_WriteOnlyIO):
    """Receives one regular member's bytes from py7zr and writes them through a _FileSink."""

    def __init__(self, sink: _FileSink) -> None:
        self._sink = sink

    def write(self, s: bytes | bytearray) -> int:
        self._sink.write(s)
        return len(s)

    def size(self) -> int:
        return self._sink.size

    def close(self) -> None:
        self._sink.finish()


class _SevenZipLinkWriter(_WriteOnlyIO):
    """Collects a symlink member's target from py7zr and creates the checked link on close."""

    def __init__(self, tree: _Tree, entry: _Planned) -> None:
        self._tree = tree
        self._entry = entry
        self._buf = bytearray()
        self._done = False

    def write(self, s: bytes | bytearray) -> int:
        self._buf += s
        if len(self._buf) > MAX_LINK_TARGET:
            raise _unsafe(self._entry.name, "symlink target too long")
        return len(s)

    def size(self) -> int:
        return len(self._buf)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            target = bytes(self._buf).decode("utf-8")
        except UnicodeDecodeError:
            raise _unsafe(self._entry.name, "symlink target is not UTF-8") from None
        self._tree.symlink(self._entry.parts, self._entry.name, target)


class _SevenZipWriters(py7zr.WriterFactory):
    """Hands py7zr a checked writer for each planned member, keyed by py7zr's output path."""

    def __init__(self, tree: _Tree, plan: dict[str, _Planned]) -> None:
        self._tree = tree
        self._plan = plan

    def create(self, filename: str) -> py7zr.Py7zIO:
        entry = self._plan.pop(filename, None)
        if entry is None:
            raise UnsafeArchiveError(f"7z decoder produced an unexpected member {_show(filename)}")
        if entry.kind == "symlink":
            return _SevenZipLinkWriter(self._tree, entry)
        return _SevenZipFileWriter(self._tree.open_file(entry.parts, entry.name, entry.executable))

    def missing(self) -> list[str]:
        return [e.name for e in self._plan.values()]


def _sevenzip_kind(f: ArchiveFile) -> str:
    name = f.filename
    fmt = f.st_fmt
    if f.is_socket:
        raise _unsafe(name, _special(stat.S_IFSOCK))
    if f.is_junction:
        raise _unsafe(name, "special file (junction) refused")
    if fmt not in (None, 0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        raise _unsafe(name, _special(fmt or 0))
    if f.is_symlink:
        if f.is_directory:
            raise _unsafe(name, "member is both a directory and a symlink")
        return "symlink"
    if f.is_directory or fmt == stat.S_IFDIR:
        if fmt not in (None, 0, stat.S_IFDIR):
            raise _unsafe(name, "member is both a directory and a file")
        if not f.emptystream:
            raise _unsafe(name, "directory member with content")
        return "dir"
    return "file"


def _extract_7z(archive: Path, tree: _Tree) -> None:
    limits = tree.limits
    with open(archive, "rb") as raw:
        sz = py7zr.SevenZipFile(raw, mode="r", max_extract_size=limits.max_total_bytes)
        try:
            files = list(sz.files)
            infos = sz.list()
            if len(files) > limits.max_members:
                raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
            base = Path(tree.root)
            plan: dict[str, _Planned] = {}
            dirs: list[tuple[tuple[str, ...], str]] = []
            seen: set[tuple[str, ...]] = set()
            declared = 0
            for f, info in zip(files, infos, strict=True):
                name = f.filename
                parts = _split_name(name)
                kind = _sevenzip_kind(f)
                if kind != "dir" and not parts:
                    raise _unsafe(name, "name resolves to the archive root")
                if kind != "dir" and name.endswith("/"):
                    raise _unsafe(name, "non-directory member with a directory name")
                if parts in seen:
                    raise _unsafe(name, "duplicated member name")
                seen.add(parts)
                mode = f.posix_mode or 0
                if kind != "symlink" and mode & _SETID:
                    raise _unsafe(name, "setuid/setgid bit")
                size = info.uncompressed or 0
                if size > limits.max_member_bytes:
                    raise _unsafe(name, f"declared size {size} exceeds the per-member limit")
                if kind == "symlink" and size > MAX_LINK_TARGET:
                    raise _unsafe(name, "symlink target too long")
                declared += size
                if kind == "dir":
                    dirs.append((parts, name))
                else:
                    key = base.joinpath(*parts).as_posix()
                    plan[key] = _Planned(name, parts, kind, bool(mode & 0o111))
            if declared > limits.max_total_bytes:
                raise UnsafeArchiveError(f"archive exceeds the total size limit of {limits.max_total_bytes} bytes")
            for _ in files:
                tree.begin_member()
            for parts, name in dirs:
                tree.make_dir(parts, name)
            if plan:
                targets = [e.name for e in plan.values()]
                writers = _SevenZipWriters(tree, plan)
                try:
                    sz.extract(path=base, targets=targets, factory=writers)
                except DecompressionBombError:
                    raise UnsafeArchiveError(
                        f"archive exceeds the total size limit of {limits.max_total_bytes} bytes"
                    ) from None
                missing = writers.missing()
                if missing:
                    raise _unsafe(missing[0], "member was not produced by the 7z decoder")
        finally:
            sz.close()


# --------------------------------------------------------------------------- final checks


def _final_check(root: str) -> None:
    """Defence in depth: nothing special, no setuid, and every symlink resolves inside `root`."""
    root_real = os.path.realpath(root)

    def fail(err: OSError) -> None:
        raise err

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        for entry in dirnames + filenames:
            p = os.path.join(dirpath, entry)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                if not _inside(os.path.realpath(p), root_real):
                    raise _unsafe(os.path.relpath(p, root), "symlink resolves outside the extracted tree")
            elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise _unsafe(os.path.relpath(p, root), "special file in the extracted tree")
            elif st.st_mode & _SETID:
                raise _unsafe(os.path.relpath(p, root), "setuid/setgid bit in the extracted tree")


def _publish(staging: str, dest: Path) -> None:
    """Rename the extracted root into `dest`, stripping one wrapping directory if there is one."""
    root = staging
    entries = os.listdir(staging)
    if len(entries) == 1 and entries[0] != "runtime.json":
        candidate = os.path.join(staging, entries[0])
        if stat.S_ISDIR(os.lstat(candidate).st_mode):
            root = candidate
    os.chmod(root, 0o755)
    os.rename(root, dest)


# --------------------------------------------------------------------------- entry point

_EXTRACTORS: Final[dict[str, Callable[[Path, _Tree], None]]] = {
    "tar.gz": _extract_tar,
    "zip": _extract_zip,
    "7z": _extract_7z,
}


def safe_extract(
    archive: Path,
    dest: Path,
    limits: ExtractLimits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> None:
    """Extract `archive` into `dest` (which must not exist), refusing anything unsafe.

    `progress` is called with the cumulative number of bytes written, at most every ~1 MiB
    and once at the end. If `cancel` returns True, CancelledError is raised. On any failure
    nothing is left behind: neither `dest` nor the temporary directory beside it.

    Raises UnsafeArchiveError (unsafe, corrupt, truncated or too large archive),
    CancelledError, DiskSpaceError (disk full), or OSError (other I/O problems).
    """
    archive = Path(archive)
    dest = Path(dest)
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(dest))
    fmt = detect_format(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent)
    tree = _Tree(staging, limits, progress, cancel)
    published = False
    try:
        _EXTRACTORS[fmt](archive, tree)
        tree.check_cancel()
        with _fs():
            _publish(staging, dest)
            published = True
            if os.path.isdir(staging):
                os.rmdir(staging)
        # Checked in place: stripping the wrapper changes what ".." in a relative link means.
        _final_check(str(dest))
        tree.report()
    except BaseException as exc:
        tree.close_all()
        if published:
            shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        _translate(exc, fmt, dest)
        raise


def _translate(exc: BaseException, fmt: str, dest: Path) -> None:
    """Re-raise `exc` as one of our errors when it is not one already (returns if it is)."""
    if isinstance(exc, DesktopError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return
    if isinstance(exc, _CallbackError):
        raise exc.error from None
    if isinstance(exc, _FsError):
        err = exc.error
        if err.errno in _DISK_FULL:
            raise DiskSpaceError(f"not enough disk space to extract into {dest.parent}") from err
        if err.errno in _NAME_ERRORS:
            raise UnsafeArchiveError(f"archive member name not usable here: {_one_line(err)}") from err
        raise err from None
    if isinstance(exc, OSError):
        if exc.errno in _DISK_FULL:
            raise DiskSpaceError(f"not enough disk space to extract into {dest.parent}") from exc
        if exc.errno is not None and exc.errno != errno.EINVAL and not isinstance(exc, gzip.BadGzipFile):
            return  # a real I/O error while reading the archive
    if isinstance(exc, Exception):
        kind = type(exc).__name__
        if kind == "error":  # zlib.error and friends
            kind = f"{type(exc).__module__}.error"
        raise UnsafeArchiveError(f"corrupt or unreadable {fmt} archive: {kind}: {_one_line(exc)}") from exc
