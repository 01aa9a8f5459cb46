"""Safe extraction of untrusted archives (.tar.gz, .tar.zst, .zip, .7z).

``safe_extract`` unpacks a downloaded runtime package into a directory that does not exist
yet; ``safe_extract_stream`` does the same for a tar archive while it is still arriving
(the caller's ``read(n)`` blocks until bytes are there). Members are checked one by one and
written into a temporary directory beside the destination, which is renamed into place once
the whole archive was read, and walked a last time there. On any failure (unsafe member,
corrupt or truncated archive, limit exceeded, cancel, disk full, I/O error) both the
temporary directory and the destination are removed: nothing is left behind. Nothing here
recurses, whatever the depth of the tree, and nothing is fsync'd: ``make_durable`` does that
for the caller, for this tree's file system only.

Attacks refused (``UnsafeArchiveError``, naming the member), and why:

* Absolute names (``/etc/x``, ``C:x``) and names with a ``..`` component: they would write
  outside the destination ("zip slip"). ``..`` is refused even when it would cancel out
  lexically (``a/../b``), because ``a`` may be a symlink extracted earlier.
* Names with a backslash or a NUL byte: they mean a different path on Windows or to C code
  than to Python on Linux. (zipfile silently truncates names at NUL; the original name is
  checked. C tar readers such as libarchive truncate pax names at NUL; tarfile does not.)
* Devices, FIFOs, sockets, sparse and unknown member types: a runtime package has no use
  for them and they are a classic way to reach hardware or to block the extractor.
* setuid / setgid bits: an archive must not create privilege-raising programs; such a
  member is refused outright rather than silently stripped.
* Symlinks with an absolute target, or whose target resolves outside the root (resolved
  relative to the link's own directory, lexically in the archive namespace and then again
  against what is already on disk, so chains through earlier symlinks are followed; a chain
  of more than 40 links, which the kernel would not follow either, is refused).
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
* Archive bombs: files and links are counted against ``max_members`` and directories
  against ``max_directories`` (a release's directories are not what the member cap is
  about); the bytes written per member and in total are capped (``ExtractLimits``).
  zip and 7z are refused from their central directory / header list before anything is
  written; a tar is counted as it goes, and a size its compression layer declares (gzip
  ISIZE, zstd content size) is checked first. Declared sizes are checked up front where the
  format gives them, but the bytes actually written are what is counted, chunk by chunk
  (1 MiB), so a lying header cannot fill the disk: extraction stops before writing past the
  limit. Metadata that libraries would load whole into memory is bounded first (tar pax /
  GNU long-name headers, the decompressed tar stream as a whole, the zstd window, the zip
  entry count and central-directory size).
* Corrupt, truncated or undecodable archives raise ``UnsafeArchiveError`` with a one-line
  message, never a raw tarfile/zipfile/py7zr exception. The gzip and zstd decoders check
  the stream's CRC/checksum and length, and tar streams are read to their very end: what
  follows the end-of-archive marker must be zero padding.
* Defence in depth: once the tree is in its final place (after stripping a wrapping
  directory, which changes what ``..`` in a link means), a final walk resolves every
  symlink and refuses the archive (removing ``dest``) if any of them points outside
  ``dest``, or if any special file or setuid/setgid bit is present.

Not taken from the archive: owners, groups, mtimes, and permissions beyond the
executable bit. Directories are 0o700, files 0o700 when any exec bit was set, else 0o600: a
version lives in the user's private data dir.

Formats (see the modules): tar.gz and tar.zst (``_tar``: native decompression, tar framing
read here, headers parsed by ``tarfile``), zip (``_zip``), 7z (``_sevenzip``, py7zr).
There is no depth limit: a path is as deep as the operating system allows (PATH_MAX), and
a member beyond it is refused in one line.

If, after extraction, the root holds exactly one entry and it is a real directory (not a
symlink, not named ``runtime.json``), its contents become the root (npm's ``package/``).
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from desktop.core.archive._common import (
    CallbackError,
    FsError,
    link_stays_inside,
    one_line,
    resolve_inside,
    unsafe,
)
from desktop.core.archive._tar import (
    ZSTD_HEADER_MAX,
    CallerStream,
    decoder,
    engine,
    extract_tar_stream,
    precheck_file,
    precheck_zstd,
)
from desktop.core.archive._tree import DIR_MODE, Digests, Tree, Written
from desktop.core.archive._zip import extract_zip
from desktop.core.archive.durable import make_durable
from desktop.core.errors import DesktopError, DiskSpaceError, UnsafeArchiveError
from desktop.core.limits import ExtractLimits
from desktop.core.tree import remove_tree, walk

__all__ = [
    "Digests",
    "Written",
    "DEFAULT_LIMITS",
    "FORMATS",
    "STREAM_FORMATS",
    "ExtractLimits",
    "detect_format",
    "engine",
    "link_stays_inside",
    "make_durable",
    "safe_extract",
    "safe_extract_stream",
    "sniff_format",
]

FORMATS: Final = ("tar.gz", "tar.zst", "zip", "7z")
STREAM_FORMATS: Final = ("tar.gz", "tar.zst")  # zip and 7z need the whole file (index at the end)
DEFAULT_LIMITS: Final = ExtractLimits()

_MAGICS: Final = (
    (b"\x1f\x8b", "tar.gz"),
    (b"\x28\xb5\x2f\xfd", "tar.zst"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
)
_MAGIC: Final = {fmt: magic for magic, fmt in reversed(_MAGICS)}
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_NAME_ERRORS: Final = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})

Progress = Callable[[int], None]
Cancel = Callable[[], bool]


def sniff_format(head: bytes) -> str:
    """"tar.gz", "tar.zst", "zip" or "7z" from an archive's first bytes (8 are enough)."""
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    raise UnsafeArchiveError("unsupported archive format")


def detect_format(path: Path) -> str:
    """The archive format from the file's magic bytes (the name is not trusted)."""
    with open(path, "rb") as fh:
        return sniff_format(fh.read(8))


def safe_extract(
    archive: Path,
    dest: Path,
    limits: ExtractLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    hash_files: bool = False,
) -> Digests:
    """Extract `archive` into `dest` (which must not exist), refusing anything unsafe. With
    `hash_files`, returns every regular file's size and sha256 as written (with its inode and
    mtime), by path relative to `dest` (else an empty mapping: memory stays flat in the file count).

    `progress` is called with the cumulative number of bytes written, at most every ~1 MiB
    and once at the end. If `cancel` returns True, CancelledError is raised. On any failure
    nothing is left behind: neither `dest` nor the temporary directory beside it.

    Raises UnsafeArchiveError (unsafe, corrupt, truncated or too large archive),
    CancelledError, DiskSpaceError (disk full), or OSError (other I/O problems).
    """
    archive = Path(archive)
    dest = Path(dest)
    _check_dest(dest)
    fmt = detect_format(archive)

    def fill(tree: Tree) -> None:
        if fmt == "zip":
            extract_zip(archive, tree)
        elif fmt == "7z":
            # py7zr (and the crypto it loads) costs ~170 ms to import: only when a 7z arrives.
            from desktop.core.archive._sevenzip import extract_7z

            extract_7z(archive, tree)
        else:
            precheck_file(os.fspath(archive), fmt, tree.limits)
            with open(archive, "rb") as raw, decoder(raw, fmt) as src:
                extract_tar_stream(src, tree)

    return _extract(fill, fmt, dest, limits, progress, cancel, hash_files)


def safe_extract_stream(
    read: Callable[[int], bytes],
    dest: Path,
    fmt: str,
    limits: ExtractLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    hash_files: bool = False,
) -> Digests:
    """Extract a tar archive ("tar.gz" or "tar.zst") from `read` as its bytes arrive.

    `read(n)` returns up to n bytes, blocking until some are available, and b"" at the end;
    it is called until it returns b"" (so a caller that hashes what it hands out has seen
    every byte when this returns). An exception from `read` propagates unchanged. Same
    guarantees and errors as `safe_extract`; the first bytes must match `fmt`. The caller
    must still verify the archive's digest before making the result launchable.
    """
    dest = Path(dest)
    _check_dest(dest)
    if fmt not in STREAM_FORMATS:
        raise ValueError(f"cannot extract {fmt!r} from a stream (expected one of {', '.join(STREAM_FORMATS)})")

    def fill(tree: Tree) -> None:
        head = b""
        while len(head) < ZSTD_HEADER_MAX:
            try:
                more = read(ZSTD_HEADER_MAX - len(head))
            except BaseException as exc:
                raise CallbackError(exc) from exc
            if not more:
                break
            head += more
        if not head.startswith(_MAGIC[fmt]):
            raise UnsafeArchiveError(f"not a {fmt} archive")
        if fmt == "tar.zst":
            precheck_zstd(head, tree.limits)
        with CallerStream(read, head) as raw, decoder(raw, fmt) as src:  # type: ignore[arg-type]
            extract_tar_stream(src, tree)

    return _extract(fill, fmt, dest, limits, progress, cancel, hash_files)


def _check_dest(dest: Path) -> None:
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(dest))


def _extract(
    fill: Callable[[Tree], None],
    fmt: str,
    dest: Path,
    limits: ExtractLimits,
    progress: Progress | None,
    cancel: Cancel | None,
    hash_files: bool,
) -> Digests:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent)
    tree = Tree(staging, limits, progress, cancel, hash_files)
    published = False
    try:
        fill(tree)
        tree.check_cancel()
        tree.close_all()
        try:
            wrapper = _publish(staging, dest)
            published = True
            if os.path.isdir(staging):
                os.rmdir(staging)
        except OSError as exc:
            raise FsError(exc) from exc
        # Checked in place: stripping the wrapper changes what ".." in a relative link means.
        _final_check(str(dest))
        tree.report()
        return Digests(tree.digests, wrapper)
    except BaseException as exc:
        tree.close_all()
        if published:
            _remove(dest)
        _remove(staging)
        _translate(exc, fmt, dest)
        raise


def _remove(path: Path | str) -> None:
    try:
        remove_tree(path)
    except OSError:
        pass  # reported by the error being raised; a leftover partial is cleaned up later


def _final_check(root: str) -> None:
    """Defence in depth: nothing special, no setuid, and every symlink resolves inside `root`."""
    root_real = os.path.realpath(root)
    for entry in walk(root, sort=False):
        mode = entry.st.st_mode
        if stat.S_ISLNK(mode):
            parent = tuple(p for p in entry.rel.split("/")[:-1])
            inside = resolve_inside(root_real, parent, os.readlink(entry.path))
            if not inside:
                raise unsafe(entry.rel, "symlink resolves outside the extracted tree")
        elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise unsafe(entry.rel, "special file in the extracted tree")
        elif mode & (stat.S_ISUID | stat.S_ISGID):
            raise unsafe(entry.rel, "setuid/setgid bit in the extracted tree")


def _publish(staging: str, dest: Path) -> str:
    """Rename the extracted root into `dest`, stripping one wrapping directory if there is one;
    returns the stripped prefix ("package/", or "")."""
    root, wrapper = staging, ""
    entries = os.listdir(staging)
    if len(entries) == 1 and entries[0] != "runtime.json":
        candidate = os.path.join(staging, entries[0])
        if stat.S_ISDIR(os.lstat(candidate).st_mode):
            root, wrapper = candidate, entries[0] + "/"
    os.chmod(root, DIR_MODE)
    os.rename(root, dest)
    return wrapper


def _translate(exc: BaseException, fmt: str, dest: Path) -> None:
    """Re-raise `exc` as one of our errors when it is not one already (returns if it is)."""
    if isinstance(exc, CallbackError):
        raise exc.error from None
    if isinstance(exc, DesktopError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return
    if isinstance(exc, FsError):
        err = exc.error
        if err.errno in _DISK_FULL:
            raise DiskSpaceError(f"not enough disk space to extract into {dest.parent}") from err
        if err.errno in _NAME_ERRORS:
            raise UnsafeArchiveError(f"archive member name not usable here: {one_line(err)}") from err
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
        raise UnsafeArchiveError(f"corrupt or unreadable {fmt} archive: {kind}: {one_line(exc)}") from exc

