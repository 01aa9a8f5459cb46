"""The delta file format: one stream, read front to back, applied while it is being downloaded.

All integers are big-endian. ``len``-prefixed strings are UTF-8.

    magic          8 bytes  b"\\x89DDELTA\\n"
    format         u16      1
    header         u32 len + canonical JSON {"base_version", "base_manifest_sha256",
                                             "target_version", "target_manifest_sha256"}
    manifest       u32 len + zstd frame: the target manifest's canonical bytes, compressed with
                   the base manifest's canonical bytes as a raw-content dictionary (most entries
                   are unchanged, so this costs a few bytes per changed file)
    stream dict    u16 count + that many u32 indexes into the base manifest's files: their
                   contents, concatenated, are the raw-content dictionary of the delta's one
                   shared zstd stream (STREAM pieces)
    records        covering every regular file of the target manifest once, in manifest order
                   (a base path is u16 len + UTF-8; len 0xFFFF means "the target's own path"):
      RUN   0x03   u32 first file index, u32 count          files unchanged at the same path
      COPY  0x01   u32 file index, base path                the base file, unchanged (moved)
      FILE  0x02   u32 file index, base path (len 0 = none), then pieces until the
                   file's size (from the target manifest) is reached:
        RAW    0x00  u32 out_len, u32 payload_len, zstd frame
        ZREF   0x01  u64 ref_off, u32 ref_len, u32 out_len, u32 payload_len, zstd frame
                     compressed with base[ref_off:ref_off+ref_len] as a raw-content dictionary
        BSDIFF 0x02  u64 ref_off, u32 ref_len, u32 out_len, u32 payload_len, zstd frame of
                     u32 ctrl_len, u32 diff_len, u32 extra_len, ctrl, diff, extra (bsdiff's
                     three blocks) against base[ref_off:ref_off+ref_len]
        RANGE  0x03  u64 ref_off, u64 out_len                base[ref_off:ref_off+out_len]
        STREAM 0x04  u32 out_len, u32 payload_len, the next bytes of the shared zstd stream
                     (flushed at a block boundary): new small files share one compression
                     context, primed with base files like them, instead of each paying to
                     learn the vocabulary again
    end            0xFF, then the sha256 of every byte before it

Directories and links are not records: they come from the target manifest. The header names
both manifests by digest, so a delta is only ever applied to the base it was made from and
only ever produces the tree the signed target manifest describes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Final

from desktop.core.delta.errors import DeltaError

MAGIC: Final = b"\x89DDELTA\n"
FORMAT_VERSION: Final = 1
MAX_HEADER_BYTES: Final = 64 * 1024

OP_COPY: Final = 0x01
OP_FILE: Final = 0x02
OP_RUN: Final = 0x03
OP_END: Final = 0xFF
SAME_PATH: Final = 0xFFFF

PIECE_RAW: Final = 0x00
PIECE_ZREF: Final = 0x01
PIECE_BSDIFF: Final = 0x02
PIECE_RANGE: Final = 0x03
PIECE_STREAM: Final = 0x04
PIECE_NAMES: Final = {PIECE_RAW: "raw", PIECE_ZREF: "zstd-ref", PIECE_BSDIFF: "bsdiff", PIECE_RANGE: "range",
                      PIECE_STREAM: "stream"}
MAX_STREAM_DICT_FILES: Final = 1024

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_ZREF: Final = struct.Struct(">QIII")
_RAW: Final = struct.Struct(">II")
_RANGE: Final = struct.Struct(">QQ")
_BSDIFF_HEAD: Final = struct.Struct(">III")


@dataclass(frozen=True)
class DeltaHeader:
    """Which base the delta applies to and which target it produces."""

    base_version: str
    base_manifest_sha256: str
    target_version: str
    target_manifest_sha256: str

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> DeltaHeader:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise DeltaError("delta header is not valid JSON") from None
        keys = {"base_version", "base_manifest_sha256", "target_version", "target_manifest_sha256"}
        if not isinstance(obj, dict) or set(obj) != keys or not all(isinstance(obj[k], str) for k in keys):
            raise DeltaError("delta header is malformed")
        return cls(**obj)


# --------------------------------------------------------------------------- writing


class DeltaWriter:
    """Writes a delta to a binary file object, hashing everything for the end record."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.written = 0

    def raw(self, data: bytes) -> None:
        self._out.write(data)
        self._hash.update(data)
        self.written += len(data)

    def start(self, header: DeltaHeader, manifest_frame: bytes, stream_dict: list[int] | None = None) -> None:
        head = header.to_bytes()
        self.raw(MAGIC + _U16.pack(FORMAT_VERSION) + _U32.pack(len(head)) + head)
        self.raw(_U32.pack(len(manifest_frame)) + manifest_frame)
        indexes = stream_dict or []
        self.raw(_U16.pack(len(indexes)) + b"".join(_U32.pack(i) for i in indexes))

    def run(self, index: int, count: int) -> None:
        self.raw(_U8.pack(OP_RUN) + _U32.pack(index) + _U32.pack(count))

    def copy(self, index: int, base_path: str, target_path: str) -> None:
        self.raw(_U8.pack(OP_COPY) + _U32.pack(index) + _name(base_path, target_path))

    def file(self, index: int, base_path: str | None, target_path: str) -> None:
        self.raw(_U8.pack(OP_FILE) + _U32.pack(index) + _name(base_path or "", target_path))

    def piece_raw(self, out_len: int, frame: bytes, method: int = PIECE_RAW) -> None:
        self.raw(_U8.pack(method) + _RAW.pack(out_len, len(frame)))
        self.raw(frame)

    def piece_ref(self, method: int, ref_off: int, ref_len: int, out_len: int, payload: bytes) -> None:
        self.raw(_U8.pack(method) + _ZREF.pack(ref_off, ref_len, out_len, len(payload)))
        self.raw(payload)

    def piece_range(self, ref_off: int, out_len: int) -> None:
        self.raw(_U8.pack(PIECE_RANGE) + _RANGE.pack(ref_off, out_len))

    def end(self) -> None:
        digest = self._hash.copy()
        digest.update(_U8.pack(OP_END))
        self._out.write(_U8.pack(OP_END) + digest.digest())
        self.written += 1 + 32


def _name(base_path: str, target_path: str) -> bytes:
    if base_path and base_path == target_path:
        return _U16.pack(SAME_PATH)
    name = base_path.encode("utf-8")
    if len(name) >= SAME_PATH:
        raise ValueError(f"path too long for a delta record: {base_path[:100]!r}")
    return _U16.pack(len(name)) + name


def pack_bsdiff(control: bytes, diff: bytes, extra: bytes) -> bytes:
    """bsdiff's three blocks in one buffer (compressed by the caller)."""
    return _BSDIFF_HEAD.pack(len(control), len(diff), len(extra)) + control + diff + extra


def unpack_bsdiff(data: bytes, out_len: int) -> tuple[bytes, bytes, bytes]:
    """Split and check bsdiff's blocks: lengths add up and every control triple is sane."""
    if len(data) < _BSDIFF_HEAD.size:
        raise DeltaError("corrupt delta: bsdiff piece too short")
    n_ctrl, n_diff, n_extra = _BSDIFF_HEAD.unpack_from(data)
    body = len(data) - _BSDIFF_HEAD.size
    if n_ctrl + n_diff + n_extra != body or n_ctrl % 24 or n_diff + n_extra != out_len:
        raise DeltaError("corrupt delta: bsdiff piece lengths do not add up")
    start = _BSDIFF_HEAD.size
    control = data[start:start + n_ctrl]
    diff = data[start + n_ctrl:start + n_ctrl + n_diff]
    extra = data[start + n_ctrl + n_diff:]
    sum_x = sum_y = 0
    for i in range(0, n_ctrl, 24):
        x, y = _bsdiff_int(control, i), _bsdiff_int(control, i + 8)
        if x < 0 or y < 0:
            raise DeltaError("corrupt delta: negative length in a bsdiff control block")
        sum_x += x
        sum_y += y
    if sum_x != n_diff or sum_y != n_extra:
        raise DeltaError("corrupt delta: bsdiff control block does not match its data")
    return control, diff, extra


def _bsdiff_int(buf: bytes, offset: int) -> int:
    """bsdiff's sign-magnitude little-endian int64."""
    value = int.from_bytes(buf[offset:offset + 8], "little")
    return -(value & ~(1 << 63)) if value & (1 << 63) else value


# --------------------------------------------------------------------------- reading


class DeltaReader:
    """Sequential reads from `read(n)` with a byte cap, exact lengths and a running sha256."""

    def __init__(self, read: Callable[[int], bytes], max_bytes: int) -> None:
        self._read = read
        self._max = max_bytes
        self._hash = hashlib.sha256()
        self.consumed = 0

    def exact(self, n: int) -> bytes:
        if self.consumed + n > self._max:
            raise DeltaError(f"delta is larger than the limit of {self._max} bytes")
        parts: list[bytes] = []
        left = n
        while left:
            block = self._read(min(left, 1024 * 1024))
            if not block:
                raise DeltaError("delta ends early (truncated download?)")
            if len(block) > left:
                raise DeltaError("delta reader returned more bytes than asked for")
            parts.append(block)
            left -= len(block)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._hash.update(data)
        self.consumed += n
        return data

    def u8(self) -> int:
        return int(_U8.unpack(self.exact(1))[0])

    def u16(self) -> int:
        return int(_U16.unpack(self.exact(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.exact(4))[0])

    def name(self, target_path: str) -> str:
        size = self.u16()
        if size == SAME_PATH:
            return target_path
        raw = self.exact(size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DeltaError("corrupt delta: a path is not UTF-8") from None

    def stream_dict(self) -> list[int]:
        count = self.u16()
        if count > MAX_STREAM_DICT_FILES:
            raise DeltaError("corrupt delta: too many stream dictionary files")
        return [self.u32() for _ in range(count)]

    def zref(self) -> tuple[int, int, int, int]:
        ref_off, ref_len, out_len, payload_len = _ZREF.unpack(self.exact(_ZREF.size))
        return int(ref_off), int(ref_len), int(out_len), int(payload_len)

    def raw_piece(self) -> tuple[int, int]:
        out_len, payload_len = _RAW.unpack(self.exact(_RAW.size))
        return int(out_len), int(payload_len)

    def range_piece(self) -> tuple[int, int]:
        ref_off, out_len = _RANGE.unpack(self.exact(_RANGE.size))
        return int(ref_off), int(out_len)

    def header(self) -> DeltaHeader:
        if self.exact(len(MAGIC)) != MAGIC:
            raise DeltaError("not a delta file (bad magic)")
        version = self.u16()
        if version != FORMAT_VERSION:
            raise DeltaError(f"unsupported delta format {version}")
        size = self.u32()
        if size > MAX_HEADER_BYTES:
            raise DeltaError("delta header is too large")
        return DeltaHeader.from_bytes(self.exact(size))

    def check_end(self) -> None:
        """After the END op byte: the stream's own digest, then nothing more."""
        expected = self._hash.digest()
        if self.exact(32) != expected:
            raise DeltaError("corrupt delta: end digest does not match")
        if self._read(1):
            raise DeltaError("corrupt delta: bytes after the end record")
