"""Reproducible packing of a directory into .tar.gz, .tar.zst, .zip or .7z (used by the publisher).

The same tree gives byte-identical archives whatever the files' mtimes, owners or exact
permission bits:

* members sorted by name, directories before their contents;
* one fixed mtime (SOURCE_DATE_EPOCH if set, else 2000-01-01 UTC), uid/gid 0, no names;
* permissions normalized: 0o755 for directories and executables, 0o644 for other files;
* gzip header with mtime 0 and no file name; zstd single-threaded (its output depends on
  the thread count) at level 19 with long-distance matching over a 16 MiB window, the
  most the extractor accepts (the window is the decoder's memory), with a checksum;
* internal relative symlinks kept as symlinks; absolute symlinks or symlinks resolving
  outside the source are refused (UnsafeArchiveError), as are special files;
* ``__pycache__`` directories and ``*.pyc`` files skipped.

The archive is written to a temporary file beside `out` and renamed over it at the end.
"""

from __future__ import annotations

import calendar
import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, cast

import py7zr

from desktop.core.archive import link_stays_inside
from desktop.core.archive._tar import ZSTD_WINDOW_LOG_MAX, zstd_module
from desktop.core.errors import UnsafeArchiveError
from desktop.core.tree import walk

_zstd = zstd_module()

__all__ = ["FORMATS", "pack_directory"]

FORMATS: Final = ("tar.gz", "tar.zst", "zip", "7z")
ZSTD_LEVEL: Final = 19
DEFAULT_MTIME: Final = calendar.timegm((2000, 1, 1, 0, 0, 0))
_CHUNK: Final = 1024 * 1024
_ZIP_MIN: Final = calendar.timegm((1980, 1, 1, 0, 0, 0))
_ZIP_MAX: Final = calendar.timegm((2107, 12, 31, 23, 59, 58))

# 7z attributes: Windows bits in the low 16 bits, unix mode in the high 16 bits.
_7Z_DIRECTORY: Final = 0x10
_7Z_ARCHIVE: Final = 0x20
_7Z_REPARSE_POINT: Final = 0x400
_7Z_UNIX_EXTENSION: Final = 0x8000
_FILETIME_EPOCH: Final = 11644473600  # seconds from 1601-01-01 to 1970-01-01


@dataclass(frozen=True)
class _Entry:
    name: str  # relative, "/"-separated, without the wrap prefix
    kind: str  # "dir" | "file" | "symlink"
    path: str
    mode: int  # normalized permission bits
    target: str = ""
    st: os.stat_result | None = None  # the lstat the scan saw


def fixed_mtime() -> int:
    """SOURCE_DATE_EPOCH when set to a valid non-negative integer, else 2000-01-01 UTC."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if value:
        try:
            epoch = int(value)
        except ValueError:
            epoch = -1
        if epoch >= 0:
            return epoch
    return DEFAULT_MTIME


def _scan(src: Path) -> list[_Entry]:
    root = os.path.realpath(src)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"not a directory: {src}")
    entries: list[_Entry] = []
    for item in walk(root):
        parts = tuple(item.rel.split("/"))
        if any(p == "__pycache__" for p in parts[:-1]):
            continue
        name = item.rel
        leaf = parts[-1]
        if "\\" in leaf:
            raise UnsafeArchiveError(f"cannot pack {name!r}: backslash in name")
        st = item.st
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(item.path)
            _check_link(root, parts, item.path, target)
            entries.append(_Entry(name, "symlink", item.path, 0o777, target))
        elif stat.S_ISDIR(st.st_mode):
            if leaf != "__pycache__":
                entries.append(_Entry(name, "dir", item.path, 0o755))
        elif stat.S_ISREG(st.st_mode):
            if leaf.endswith(".pyc"):
                continue
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            entries.append(_Entry(name, "file", item.path, mode, st=st))
        else:
            raise UnsafeArchiveError(f"cannot pack {name!r}: special file (device, FIFO, socket)")
    entries.sort(key=lambda e: e.name)
    return entries


def _check_link(root: str, parts: tuple[str, ...], path: str, target: str) -> None:
    name = "/".join(parts)
    if not target or target.startswith("/") or "\\" in target or os.path.isabs(target):
        raise UnsafeArchiveError(f"cannot pack symlink {name!r}: absolute or non-portable target {target!r}")
    if not link_stays_inside(parts, target):
        raise UnsafeArchiveError(f"cannot pack symlink {name!r}: target {target!r} is outside the source")
    resolved = os.path.realpath(path)
    if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise UnsafeArchiveError(f"cannot pack symlink {name!r}: target {target!r} resolves outside the source")


def _arcnames(src: Path, entries: list[_Entry], wrap: str | None) -> list[tuple[str, _Entry]]:
    if wrap is None:
        return [(e.name, e) for e in entries]
    top = _Entry(wrap, "dir", os.path.realpath(src), 0o755)
    return [(wrap, top)] + [(f"{wrap}/{e.name}", e) for e in entries]


def _write_tar_gz(fh: IO[bytes], members: list[tuple[str, _Entry]], mtime: int, level: int | None) -> None:
    with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9 if level is None else level) as gz:
        _write_tar(cast(IO[bytes], gz), members, mtime)


def _write_tar_zst(fh: IO[bytes], members: list[tuple[str, _Entry]], mtime: int, level: int | None) -> None:
    options: dict[int, int] = {
        _zstd.CompressionParameter.compression_level: ZSTD_LEVEL if level is None else level,
        _zstd.CompressionParameter.window_log: ZSTD_WINDOW_LOG_MAX,
        _zstd.CompressionParameter.enable_long_distance_matching: 1,
        _zstd.CompressionParameter.checksum_flag: 1,
    }
    with _zstd.ZstdFile(fh, mode="w", options=options) as zf:
        _write_tar(cast(IO[bytes], zf), members, mtime)


def _write_tar(out: IO[bytes], members: list[tuple[str, _Entry]], mtime: int) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for arcname, entry in members:
            info = tarfile.TarInfo(arcname)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tf.addfile(info)
            else:
                with open(entry.path, "rb") as src:
                    info.type = tarfile.REGTYPE
                    info.size = os.fstat(src.fileno()).st_size
                    tf.addfile(info, src)


def _write_zip(fh: IO[bytes], members: list[tuple[str, _Entry]], mtime: int, level: int | None) -> None:
    clamped = min(max(mtime, _ZIP_MIN), _ZIP_MAX)
    date_time = time.gmtime(clamped)[:6]
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, entry in members:
            if entry.kind == "dir":
                info = zipfile.ZipInfo(arcname + "/", date_time=date_time)
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
            elif entry.kind == "symlink":
                info = zipfile.ZipInfo(arcname, date_time=date_time)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            else:
                info = zipfile.ZipInfo(arcname, date_time=date_time)
                info.external_attr = (stat.S_IFREG | entry.mode) << 16
            info.create_system = 3  # unix, so that external_attr carries the mode
            if entry.kind == "dir":
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, b"")
            elif entry.kind == "symlink":
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, entry.target.encode("utf-8"))
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(entry.path, "rb") as src:
                    info.file_size = os.fstat(src.fileno()).st_size
                    with zf.open(info, "w", force_zip64=info.file_size >= 2**31) as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)


def _write_7z(fh: IO[bytes], members: list[tuple[str, _Entry]], mtime: int, level: int | None) -> None:
    filetime = (mtime + _FILETIME_EPOCH) * 10_000_000
    sz = py7zr.SevenZipFile(fh, mode="w")
    try:
        for arcname, entry in members:
            if entry.kind == "dir":
                attributes = _7Z_DIRECTORY | _7Z_UNIX_EXTENSION | ((stat.S_IFDIR | 0o755) << 16)
                sz.write(entry.path, arcname)
            elif entry.kind == "symlink":
                attributes = (
                    _7Z_ARCHIVE | _7Z_REPARSE_POINT | _7Z_UNIX_EXTENSION | ((stat.S_IFLNK | 0o777) << 16)
                )
                sz.writestr(entry.target.encode("utf-8"), arcname)
            else:
                attributes = _7Z_ARCHIVE | _7Z_UNIX_EXTENSION | ((stat.S_IFREG | entry.mode) << 16)
                sz.write(entry.path, arcname)
            # py7zr records the real timestamps and modes: overwrite them with fixed ones.
            info: dict[str, Any] = sz.header.files_info.files[-1]
            info["attributes"] = attributes
            for key in ("creationtime", "lastaccesstime"):
                info.pop(key, None)
            info["lastwritetime"] = filetime
    finally:
        sz.close()


_WRITERS: Final = {"tar.gz": _write_tar_gz, "tar.zst": _write_tar_zst, "zip": _write_zip, "7z": _write_7z}


def pack_directory(src: Path, out: Path, fmt: str = "tar.gz", wrap: str | None = "package", *,
                   level: int | None = None) -> None:
    """Pack `src` into `out` (fmt "tar.gz", "tar.zst", "zip" or "7z"), members under `wrap/` if given.

    Same input tree -> byte-identical output. `level` overrides the compression level of
    tar.gz (default 9) and tar.zst (default 19); publishing uses the defaults. Raises
    UnsafeArchiveError for symlinks that point outside `src` (or are absolute) and for
    special files, ValueError for a bad `fmt` or `wrap`.
    """
    if fmt not in _WRITERS:
        raise ValueError(f"unsupported archive format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if wrap is not None and (wrap in ("", ".", "..") or "/" in wrap or "\\" in wrap or "\x00" in wrap):
        raise ValueError(f"invalid wrap directory name {wrap!r}")
    src = Path(src)
    out = Path(out)
    members = _arcnames(src, _scan(src), wrap)
    mtime = fixed_mtime()
    writer = _WRITERS[fmt]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            writer(fh, members, mtime, level)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
