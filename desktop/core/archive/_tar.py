"""tar.gz and tar.zst: native decompression, tar framing read here, headers parsed by tarfile.

The byte work is native: gzip through ISA-L (`isal.igzip`, several times faster than zlib;
zlib's `gzip` module when isal is not installed), zstd through libzstd (`backports.zstd`,
the stdlib's `compression.zstd` from Python 3.14). Both decoders check the stream's own
checksums and length and raise on a truncated stream. Each 512-byte tar header is parsed by
the stdlib's `tarfile.TarInfo.fromtarfile` (ustar, GNU and pax), but the stream is read
here: tarfile's streaming mode copies every byte through small Python-level buffers, which
cost more than decompression itself. Member data is read straight into one reusable buffer
and written from it.

Metadata that tarfile reads whole into memory is bounded first (pax and GNU long-name
headers, 1 MiB each), and the decompressed stream as a whole is capped, so any bomb costs
bounded CPU. zstd frames may ask for a window of at most 2**ZSTD_WINDOW_LOG_MAX bytes (the
decoder's memory). Before anything is written, a size the archive itself declares (the gzip
ISIZE trailer, a zstd frame's content size) is compared with the cap: both only ever
understate the stream, and a false one fails decompression anyway.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import os
import struct
import sys
import tarfile
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import IO, Final, Self, cast

from desktop.core.archive._common import (
    CHUNK,
    CallbackError,
    Kind,
    Member,
    too_large,
    unsafe,
)
from desktop.core.archive._tree import Tree
from desktop.core.errors import UnsafeArchiveError
from desktop.core.limits import ExtractLimits


def zstd_module() -> ModuleType:
    """The stdlib's zstd module (Python 3.14) or its backport: the same API."""
    if sys.version_info >= (3, 14):  # pragma: no cover
        return importlib.import_module("compression.zstd")
    return importlib.import_module("backports.zstd")


_zstd = zstd_module()

MAX_TAR_TRAILER: Final = 16 * 1024 * 1024
MAX_TAR_META: Final = 1024 * 1024  # pax / GNU long-name headers are read into memory by tarfile
TAR_OVERHEAD_PER_MEMBER: Final = 8 * 1024  # header, pax records, padding
# The decoder keeps one window of history: 16 MiB keeps extraction's memory small on any
# machine; `pack_directory` writes tar.zst with exactly this window.
ZSTD_WINDOW_LOG_MAX: Final = 24

_TAR_META_TYPES: Final = frozenset({
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
})
# Not in the type stubs, but part of tarfile since 3.2 (what `TarInfo.fromtarfile` raises).
_EOF_HEADER: Final[type[Exception]] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EMPTY_HEADER: Final[type[Exception]] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_TAR_SPECIAL_NAMES: Final = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


def gzip_module() -> ModuleType:
    """ISA-L's gzip reader when installed, else the stdlib's (same API, same checks)."""
    try:
        from isal import igzip
    except ImportError:
        return gzip
    return igzip


def engine() -> str:
    """Which gzip decoder extraction uses, for reports."""
    return "isal" if gzip_module() is not gzip else "zlib"


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads pax and GNU long-name headers whole into memory: refuse huge ones first."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _TAR_META_TYPES and info.size > MAX_TAR_META:
            raise UnsafeArchiveError(f"tar extended header of {info.size} bytes refused")
        return info


class CallerStream(io.RawIOBase):
    """A caller's `read(n)` (blocking until bytes arrive, b"" at the end) as a raw stream."""

    def __init__(self, read: Callable[[int], bytes], head: bytes = b"") -> None:
        super().__init__()
        self._read = read
        self._head = head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        try:
            data = self._read(len(view))
        except BaseException as exc:
            # The caller's own failure (a dropped connection, a digest check): never blamed on
            # the archive.
            raise CallbackError(exc) from exc
        n = len(data)
        if n > len(view):
            raise CallbackError(ValueError(f"read({len(view)}) returned {n} bytes"))
        view[:n] = data
        return n


class _TarStream:
    """The decompressed tar stream: forward-only, position counted, refused past `cap` bytes."""

    def __init__(self, src: IO[bytes], cap: int) -> None:
        self._src = src
        self._cap = cap
        self.pos = 0

    def _count(self, n: int) -> None:
        self.pos += n
        if self.pos > self._cap:
            raise UnsafeArchiveError("tar stream is larger than the extraction limits allow")

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            raise ValueError("unbounded read")
        data = self._src.read(size)
        if len(data) < size:  # decoders may return short reads before the end
            parts = [data]
            got = len(data)
            while got < size:
                more = self._src.read(size - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self._count(len(data))
        return data

    def readinto(self, view: memoryview) -> int:
        n = self._src.readinto(view)  # type: ignore[attr-defined]
        self._count(n)
        return int(n)

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            chunk = self.read(min(CHUNK, n - done))
            if not chunk:
                break
            done += len(chunk)
        return done

    def tell(self) -> int:
        return self.pos


class _Headers:
    """What `TarInfo.fromtarfile` reads from the TarFile it is given, and nothing more."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, fileobj: _TarStream) -> None:
        self.fileobj = fileobj
        self.offset = 0
        self.pax_headers: dict[str, str] = {}


def _member(info: tarfile.TarInfo) -> Member:
    name = info.name
    if info.issym():
        return Member(name, Kind.SYMLINK, info.mode, 0, info.linkname)
    if info.islnk():
        return Member(name, Kind.HARDLINK, info.mode, 0, info.linkname)
    if info.isdir():
        return Member(name, Kind.DIR, info.mode)
    if info.isreg():
        if info.issparse():
            raise unsafe(name, "sparse files are not supported")
        return Member(name, Kind.FILE, info.mode, info.size)
    kind = _TAR_SPECIAL_NAMES.get(info.type, f"tar type {info.type!r}")
    raise unsafe(name, f"special file ({kind}) refused")


def stream_cap(limits: ExtractLimits) -> int:
    """The most decompressed tar bytes an archive within `limits` can need."""
    entries = limits.max_members + limits.max_directories
    return limits.max_total_bytes + entries * TAR_OVERHEAD_PER_MEMBER + MAX_TAR_TRAILER


def _members(stream: _TarStream) -> Iterator[tuple[Member, int]]:
    """(member, declared data size) for each header, until the end-of-archive marker."""
    headers = _Headers(stream)
    while True:
        start = stream.tell()
        try:
            info = _BoundedTarInfo.fromtarfile(headers)  # type: ignore[arg-type]
        except _EOF_HEADER:
            return
        except _EMPTY_HEADER:
            if start == 0:
                raise UnsafeArchiveError("corrupt tar archive: empty") from None
            return  # no end-of-archive marker, as some writers do; the decoder checked the stream
        except tarfile.HeaderError as exc:
            raise UnsafeArchiveError(f"corrupt tar archive at byte {start}: {exc}") from None
        member = _member(info)
        yield member, info.size if member.kind is Kind.FILE else 0
        left = headers.offset - stream.tell()
        if left < 0:
            raise UnsafeArchiveError(f"corrupt tar archive at byte {start}: member overran its data")
        if stream.skip(left) != left:
            raise UnsafeArchiveError("truncated tar archive")


def extract_tar_stream(src: IO[bytes], tree: Tree) -> None:
    """Extract the decompressed tar stream `src` (read to its very end) into `tree`."""
    stream = _TarStream(src, stream_cap(tree.limits))
    for member, size in _members(stream):
        if member.kind is not Kind.FILE:
            tree.add(member)
            continue
        left = size

        def read(buf: memoryview, name: str = member.name) -> int:
            nonlocal left
            if not left:
                return 0
            n = stream.readinto(buf[: min(left, len(buf))])
            if not n:
                raise UnsafeArchiveError(f"truncated tar archive: {name!r} ends early")
            left -= n
            return n

        tree.add(member, read)
    # Past the end-of-archive marker only zero padding may follow; reading to the very end
    # also makes the decoder check the stream's trailer (gzip CRC and length, zstd checksum).
    budget = MAX_TAR_TRAILER
    while True:
        tail = src.read(CHUNK)
        if not tail:
            break
        budget -= len(tail)
        if budget < 0 or tail.count(0) != len(tail):
            raise UnsafeArchiveError("corrupt tar archive: data after the end-of-archive marker")


@contextlib.contextmanager
def decoder(raw: IO[bytes], fmt: str) -> Iterator[IO[bytes]]:
    """The decompressed view of `raw` for "tar.gz" or "tar.zst"."""
    if fmt == "tar.gz":
        with gzip_module().GzipFile(fileobj=raw, mode="rb") as gz:
            yield gz
    elif fmt == "tar.zst":
        options: dict[int, int] = {_zstd.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX}
        with _zstd.ZstdFile(raw, mode="r", options=options) as zf:
            yield cast(IO[bytes], zf)
    else:  # pragma: no cover - callers pass known formats
        raise ValueError(fmt)


ZSTD_HEADER_MAX: Final = 18  # the longest zstd frame header


def precheck_file(path: str, fmt: str, limits: ExtractLimits) -> None:
    """Refuse, before writing anything, an archive whose own header or trailer declares too much."""
    declared: int | None = None
    with open(path, "rb") as fh:
        if fmt == "tar.gz":
            size = fh.seek(0, os.SEEK_END)
            if size >= 18 + 8:
                fh.seek(size - 4)
                (declared,) = struct.unpack("<I", fh.read(4))
            check_declared(declared, limits)
        elif fmt == "tar.zst":
            precheck_zstd(fh.read(ZSTD_HEADER_MAX), limits)


def check_declared(declared: int | None, limits: ExtractLimits) -> None:
    if declared is not None and declared > stream_cap(limits):
        raise too_large(limits.max_total_bytes)


def precheck_zstd(head: bytes, limits: ExtractLimits) -> None:
    """The first frame must carry a content checksum (else corruption goes unnoticed) and fit the cap."""
    if len(head) > 4 and not head[4] & 0x04:
        raise UnsafeArchiveError("tar.zst without a content checksum refused")
    check_declared(zstd_declared_size(head), limits)


def zstd_declared_size(head: bytes) -> int | None:
    """The content size the first zstd frame header declares, if any."""
    try:
        size = _zstd.get_frame_info(head).decompressed_size
    except (_zstd.ZstdError, ValueError):
        return None
    return size if isinstance(size, int) else None
