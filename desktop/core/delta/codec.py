"""The two piece encoders the delta uses against a reference window, and their bounded decoders.

* zstd with the reference window as a raw-content dictionary (zstd's ``--patch-from``): the
  window log is raised to cover reference + output so matches reach the whole reference, and
  the match-finder tables are sized for that total (level-derived parameters for
  ``source_size = ref + out``; sized for the output alone, a 16 MiB chunk against a 24 MiB
  reference came out 7x larger).
* bsdiff (bsdiff4's suffix-array diff) with its three blocks compressed by zstd instead of
  bzip2. It wins where a change shifts many small values across a region (relocated code).

Decoders bound their output by the length the record announces and refuse anything larger.
"""

from __future__ import annotations

from typing import Final

import bsdiff4.core as bsdiff_core
import zstandard as zstd

from desktop.core.delta.errors import DeltaError
from desktop.core.delta.format import pack_bsdiff, unpack_bsdiff

__all__ = ["bsdiff_decode", "bsdiff_encode", "raw_decoder", "raw_encode", "zref_decode", "zref_encode"]

MAX_WINDOW_LOG: Final = 27
_MIN_WINDOW_LOG: Final = 10


def _window_log(total: int) -> int:
    return max(_MIN_WINDOW_LOG, min(MAX_WINDOW_LOG, max(1, total - 1).bit_length()))


def _ref_dict(ref: bytes) -> zstd.ZstdCompressionDict:
    return zstd.ZstdCompressionDict(ref, dict_type=zstd.DICT_TYPE_RAWCONTENT)


def zref_encode(ref: bytes, data: bytes, level: int) -> bytes:
    """`data` as one zstd frame that refers back into `ref` (content size recorded)."""
    total = len(ref) + len(data)
    params = zstd.ZstdCompressionParameters.from_level(
        level, source_size=total, window_log=_window_log(total), write_content_size=True, write_checksum=False)
    return zstd.ZstdCompressor(dict_data=_ref_dict(ref), compression_params=params).compress(data)


def zref_decode(ref: bytes, payload: bytes, out_len: int, max_window: int) -> bytes:
    """Inverse of zref_encode; DeltaError unless it yields exactly `out_len` bytes."""
    return _decompress(zstd.ZstdDecompressor(dict_data=_ref_dict(ref), max_window_size=max_window),
                       payload, out_len)


def raw_encode(data: bytes, level: int) -> bytes:
    params = zstd.ZstdCompressionParameters.from_level(
        level, source_size=len(data), write_content_size=True, write_checksum=False)
    return zstd.ZstdCompressor(compression_params=params).compress(data)


def raw_decoder(max_window: int) -> zstd.ZstdDecompressor:
    return zstd.ZstdDecompressor(max_window_size=max_window)


def raw_decode(payload: bytes, out_len: int, max_window: int) -> bytes:
    return _decompress(raw_decoder(max_window), payload, out_len)


def _decompress(dctx: zstd.ZstdDecompressor, payload: bytes, out_len: int) -> bytes:
    try:
        declared = zstd.frame_content_size(payload)
    except zstd.ZstdError:
        raise DeltaError("corrupt delta: not a zstd frame") from None
    if declared != out_len:
        raise DeltaError("corrupt delta: a piece declares the wrong size")
    try:
        out = dctx.decompress(payload, max_output_size=out_len)
    except zstd.ZstdError as exc:
        raise DeltaError(f"corrupt delta: {str(exc).splitlines()[0][:200]}") from None
    if len(out) != out_len:
        raise DeltaError("corrupt delta: a piece decodes to the wrong size")
    return out


STREAM_WINDOW_LOG: Final = 22
_STREAM_SLICE: Final = 256  # compressed bytes per call: <= ~11 MiB of output before the size check


class StreamEncoder:
    """The delta's shared zstd stream: each piece ends with a block flush, history is kept."""

    def __init__(self, dictionary: bytes, level: int) -> None:
        params = zstd.ZstdCompressionParameters.from_level(
            level, window_log=STREAM_WINDOW_LOG, write_content_size=False, write_checksum=False)
        cctx = zstd.ZstdCompressor(dict_data=_ref_dict(dictionary) if dictionary else None,
                                   compression_params=params)
        self._cobj = cctx.compressobj()

    def piece(self, data: bytes) -> bytes:
        return self._cobj.compress(data) + self._cobj.flush(zstd.COMPRESSOBJ_FLUSH_BLOCK)


class StreamDecoder:
    """Inverse of StreamEncoder, one piece at a time, never producing more than announced."""

    def __init__(self, dictionary: bytes) -> None:
        dctx = zstd.ZstdDecompressor(dict_data=_ref_dict(dictionary) if dictionary else None,
                                     max_window_size=1 << STREAM_WINDOW_LOG)
        self._dobj = dctx.decompressobj()

    def piece(self, payload: bytes, out_len: int) -> bytes:
        out: list[bytes] = []
        produced = 0
        try:
            for start in range(0, len(payload), _STREAM_SLICE):
                block = self._dobj.decompress(payload[start:start + _STREAM_SLICE])
                produced += len(block)
                if produced > out_len:
                    raise DeltaError("corrupt delta: a stream piece decodes to more than announced")
                out.append(block)
        except zstd.ZstdError as exc:
            raise DeltaError(f"corrupt delta: {str(exc).splitlines()[0][:200]}") from None
        if produced != out_len:
            raise DeltaError("corrupt delta: a stream piece decodes to the wrong size")
        return b"".join(out)


def bsdiff_encode(ref: bytes, data: bytes, level: int) -> bytes:
    control, diff, extra = bsdiff_core.diff(ref, data)
    return raw_encode(pack_bsdiff(control, diff, extra), level)


def bsdiff_payload_cap(out_len: int) -> int:
    """Most bytes a bsdiff piece may decompress to: its blocks plus a control block of bounded size."""
    return 2 * out_len + 64 * 1024


def bsdiff_decode(ref: bytes, payload: bytes, out_len: int, max_window: int) -> bytes:
    try:
        declared = zstd.frame_content_size(payload)
    except zstd.ZstdError:
        raise DeltaError("corrupt delta: not a zstd frame") from None
    if declared < 0 or declared > bsdiff_payload_cap(out_len):
        raise DeltaError("corrupt delta: bsdiff piece is too large")
    blocks = _decompress(raw_decoder(max_window), payload, declared)
    control, diff, extra = unpack_bsdiff(blocks, out_len)
    del blocks
    try:
        out: bytes = bsdiff_core.patch(ref, out_len, control, diff, extra)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DeltaError(f"corrupt delta: bsdiff: {exc}") from None
    return out
