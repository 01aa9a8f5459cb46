"""7z: py7zr decodes, but writes nothing itself; the whole header list is checked first.

py7zr is given a `WriterFactory` whose writers go through the same checked file creation
and byte counting as the other formats. Names, types, modes, counts and declared sizes
(from the header list) are checked before decoding starts; duplicated names are refused.
py7zr decodes in blocks of up to its own memory limit, which are then written in 1 MiB chunks.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import py7zr
from py7zr.exceptions import DecompressionBombError
from py7zr.py7zr import ArchiveFile

from desktop.core.archive._common import (
    MAX_LINK_TARGET,
    Kind,
    Member,
    show,
    special,
    split_name,
    too_large,
    too_many_directories,
    too_many_members,
    unsafe,
)
from desktop.core.archive._tree import FileSink, Tree
from desktop.core.errors import UnsafeArchiveError


@dataclass
class _Planned:
    name: str
    parts: tuple[str, ...]
    kind: Kind
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


class _FileWriter(_WriteOnlyIO):
    """Receives one regular member's bytes from py7zr and writes them through a FileSink."""

    def __init__(self, sink: FileSink) -> None:
        self._sink = sink

    def write(self, s: bytes | bytearray) -> int:
        self._sink.write(s)
        return len(s)

    def size(self) -> int:
        return self._sink.size

    def close(self) -> None:
        self._sink.finish()


class _LinkWriter(_WriteOnlyIO):
    """Collects a symlink member's target from py7zr and creates the checked link on close."""

    def __init__(self, tree: Tree, entry: _Planned) -> None:
        self._tree = tree
        self._entry = entry
        self._buf = bytearray()
        self._done = False

    def write(self, s: bytes | bytearray) -> int:
        self._buf += s
        if len(self._buf) > MAX_LINK_TARGET:
            raise unsafe(self._entry.name, "symlink target too long")
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
            raise unsafe(self._entry.name, "symlink target is not UTF-8") from None
        self._tree.symlink(self._entry.parts, self._entry.name, target)


class _Writers(py7zr.WriterFactory):
    """Hands py7zr a checked writer for each planned member, keyed by py7zr's output path."""

    def __init__(self, tree: Tree, plan: dict[str, _Planned]) -> None:
        self._tree = tree
        self._plan = plan

    def create(self, filename: str) -> py7zr.Py7zIO:
        entry = self._plan.pop(filename, None)
        if entry is None:
            raise UnsafeArchiveError(f"7z decoder produced an unexpected member {show(filename)}")
        if entry.kind is Kind.SYMLINK:
            return _LinkWriter(self._tree, entry)
        return _FileWriter(self._tree.open_file(entry.parts, entry.name, entry.executable))

    def missing(self) -> list[str]:
        return [e.name for e in self._plan.values()]


def _kind(f: ArchiveFile) -> Kind:
    name = f.filename
    fmt = f.st_fmt
    if f.is_socket:
        raise unsafe(name, special(stat.S_IFSOCK))
    if f.is_junction:
        raise unsafe(name, "special file (junction) refused")
    if fmt not in (None, 0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        raise unsafe(name, special(fmt or 0))
    if f.is_symlink:
        if f.is_directory:
            raise unsafe(name, "member is both a directory and a symlink")
        return Kind.SYMLINK
    if f.is_directory or fmt == stat.S_IFDIR:
        if fmt not in (None, 0, stat.S_IFDIR):
            raise unsafe(name, "member is both a directory and a file")
        if not f.emptystream:
            raise unsafe(name, "directory member with content")
        return Kind.DIR
    return Kind.FILE


def extract_7z(archive: Path, tree: Tree) -> None:
    limits = tree.limits
    with open(archive, "rb") as raw:
        sz = py7zr.SevenZipFile(raw, mode="r", max_extract_size=limits.max_total_bytes)
        try:
            files = list(sz.files)
            if len(files) > limits.max_members + limits.max_directories:
                raise too_many_members(limits.max_members)
            infos = sz.list()
            members: list[Member] = []
            for f, info in zip(files, infos, strict=True):
                kind = _kind(f)
                name = f.filename
                if kind is not Kind.DIR and not split_name(name):
                    raise unsafe(name, "name resolves to the archive root")
                if kind is not Kind.DIR and name.endswith("/"):
                    raise unsafe(name, "non-directory member with a directory name")
                size = info.uncompressed or 0
                if size > limits.max_member_bytes:
                    raise unsafe(name, f"declared size {size} exceeds the per-member limit")
                if kind is Kind.SYMLINK and size > MAX_LINK_TARGET:
                    raise unsafe(name, "symlink target too long")
                members.append(Member(name, kind, stat.S_IMODE(f.posix_mode or 0), size))
            dirs = sum(1 for m in members if m.kind is Kind.DIR)
            if len(members) - dirs > limits.max_members:
                raise too_many_members(limits.max_members)
            if dirs > limits.max_directories:
                raise too_many_directories(limits.max_directories)
            if sum(m.size for m in members) > limits.max_total_bytes:
                raise too_large(limits.max_total_bytes)
            base = Path(tree.root)
            plan: dict[str, _Planned] = {}
            dir_parts: list[tuple[tuple[str, ...], str]] = []
            seen: set[tuple[str, ...]] = set()
            for m in members:
                parts = tree.admit(m)
                if parts in seen:
                    raise unsafe(m.name, "duplicated member name")
                seen.add(parts)
                if m.kind is Kind.DIR:
                    dir_parts.append((parts, m.name))
                else:
                    key = base.joinpath(*parts).as_posix()
                    plan[key] = _Planned(m.name, parts, m.kind, bool(m.mode & 0o111))
            for parts, name in dir_parts:
                tree.make_dir(parts, name)
            if plan:
                targets = [e.name for e in plan.values()]
                writers = _Writers(tree, plan)
                try:
                    sz.extract(path=base, targets=targets, factory=writers)
                except DecompressionBombError:
                    raise too_large(limits.max_total_bytes) from None
                missing = writers.missing()
                if missing:
                    raise unsafe(missing[0], "member was not produced by the 7z decoder")
        finally:
            sz.close()
