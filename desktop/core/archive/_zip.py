"""zip: the central directory is checked whole (counts, sizes, types) before anything is written."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path
from typing import Final, cast

from desktop.core.archive._common import (
    CHUNK,
    MAX_LINK_TARGET,
    Kind,
    Member,
    special,
    too_large,
    too_many_directories,
    too_many_members,
    unsafe,
)
from desktop.core.archive._tree import Tree
from desktop.core.errors import UnsafeArchiveError
from desktop.core.limits import ExtractLimits

ZIP_CD_BYTES_PER_MEMBER: Final = 1024


def _precheck(archive: Path, limits: ExtractLimits) -> None:
    """Read the end-of-central-directory record before zipfile loads the whole central directory.

    zipfile reads the central directory into memory and makes one object per entry: refuse
    an entry count over the limits, or a central directory far larger than its entries need.
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
    if entries > limits.max_members + limits.max_directories:
        # Directories and files are told apart only by parsing the entries: this bound is on both.
        raise UnsafeArchiveError(
            f"zip archive has {entries} entries, more than the {limits.max_members} files and links "
            f"and {limits.max_directories} directories allowed")
    if cd_size > entries * ZIP_CD_BYTES_PER_MEMBER + CHUNK:
        raise UnsafeArchiveError(f"zip central directory of {cd_size} bytes refused")


def _kind(info: zipfile.ZipInfo) -> Kind:
    name = info.orig_filename
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        kind = Kind.SYMLINK
    elif fmt == stat.S_IFDIR:
        kind = Kind.DIR
    elif fmt == stat.S_IFREG:
        kind = Kind.FILE
    elif fmt == 0:
        kind = Kind.DIR if name.endswith("/") else Kind.FILE
    else:
        raise unsafe(name, special(fmt))
    if kind is not Kind.DIR and name.endswith("/"):
        raise unsafe(name, "non-directory member with a directory name")
    if info.flag_bits & 0x1:
        raise unsafe(name, "encrypted members are not supported")
    if kind is Kind.DIR and info.file_size:
        raise unsafe(name, "directory member with content")
    if kind is Kind.SYMLINK and info.file_size > MAX_LINK_TARGET:
        raise unsafe(name, "symlink target too long")
    return kind


def extract_zip(archive: Path, tree: Tree) -> None:
    limits = tree.limits
    _precheck(archive, limits)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        kinds = [_kind(info) for info in infos]
        dirs = sum(1 for k in kinds if k is Kind.DIR)
        if len(kinds) - dirs > limits.max_members:
            raise too_many_members(limits.max_members)
        if dirs > limits.max_directories:
            raise too_many_directories(limits.max_directories)
        declared = 0
        for info in infos:
            if info.file_size > limits.max_member_bytes:
                raise unsafe(info.orig_filename, f"declared size {info.file_size} exceeds the per-member limit")
            declared += info.file_size
        if declared > limits.max_total_bytes:
            raise too_large(limits.max_total_bytes)
        for info, kind in zip(infos, kinds, strict=True):
            name = info.orig_filename
            mode = info.external_attr >> 16
            if kind is Kind.SYMLINK:
                with zf.open(info) as src:
                    raw = src.read(MAX_LINK_TARGET + 1)
                if len(raw) > MAX_LINK_TARGET:
                    raise unsafe(name, "symlink target too long")
                try:
                    target = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise unsafe(name, "symlink target is not UTF-8") from None
                tree.add(Member(name, kind, stat.S_IMODE(mode), 0, target))
            elif kind is Kind.DIR:
                tree.add(Member(name, kind, stat.S_IMODE(mode)))
            else:
                with zf.open(info) as src:
                    data = cast(io.BufferedIOBase, src)
                    tree.add(Member(name, kind, stat.S_IMODE(mode), info.file_size), data.readinto)
