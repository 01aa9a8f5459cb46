"""Building a delta between two release trees (publisher side).

Per regular file of the new release, in manifest order:

* content that exists anywhere in the old release (same sha256) -> COPY of that old file
  (same path preferred): nothing is sent, the client copies (or reflinks) its own file;
* otherwise a FILE record, encoded against a reference: the old file at the same path, else
  an old file with the same name elsewhere (a move), else none. The file is cut into pieces of
  `chunk_size` bytes; each piece is, by measurement:
  - RANGE when it equals the old file at the expected offset (no payload at all);
  - else zstd against a window of the old file around the expected offset (ZREF), and bsdiff
    against the same window when the rules below say it may win; the smaller is written;
  - RAW (plain zstd) when there is no reference.

The expected offset follows insertions and deletions: after each piece, a distinctive sample
from its end is searched in its window and the old/new offset shift is updated from where it
was found. A window is the piece plus `margin` bytes on each side, so both sides hold at most
one window, one piece and one encoded payload at a time: memory does not grow with file size.

When bsdiff is tried (measured on runtime-like content): always for pieces up to
`bsdiff_always_below` (cheap; zstd still wins on small text edits: 128 vs 287 bytes for three
edits of a 2 KB file); for larger pieces only when zstd's result exceeds 1/`bsdiff_ratio`
of the piece (a few edited regions in 30 MB: zstd 140 KB in 0.7 s, bsdiff 151 KB in 14 s;
every address in 4 MB shifted: zstd 223 KB, bsdiff 92 KB in 1.9 s), the window is at most
`bsdiff_max_window` and the delta's bsdiff budget (bytes of reference, so that the same
trees always give the same delta) is not spent.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import zstandard as zstd

from desktop.core.delta.codec import StreamEncoder, bsdiff_encode, bsdiff_payload_cap, raw_encode, zref_encode
from desktop.core.delta.errors import DeltaError
from desktop.core.delta.format import (
    PIECE_BSDIFF,
    PIECE_NAMES,
    PIECE_RANGE,
    PIECE_RAW,
    PIECE_STREAM,
    PIECE_ZREF,
    DeltaHeader,
    DeltaWriter,
)
from desktop.core.delta.manifest import FILE, FileManifest, ManifestEntry
from desktop.core.errors import CancelledError

__all__ = ["DeltaStats", "EncodeOptions", "build_delta", "should_publish"]

MiB: Final = 1024 * 1024
_SAMPLE: Final = 64


@dataclass(frozen=True)
class EncodeOptions:
    """How hard the encoder works; the defaults keep encode and apply memory bounded."""

    chunk_size: int = 8 * MiB
    margin: int = 2 * MiB
    level_small: int = 19  # reference + piece up to `small_bytes`
    # Larger pieces. Level 19 took 33 s for 30 MB and saved 7 %; level 9's match tables are too
    # small for a 20 MiB reference + piece: incompressible content 3 KB apart came out at 6.4 MB
    # instead of 29 KB. Level 12 found both (0.6 s per 8 MiB piece).
    level_large: int = 12
    small_bytes: int = 1 * MiB
    raw_level_large: int = 12
    raw_small_bytes: int = 4 * MiB
    bsdiff_always_below: int = 64 * 1024
    bsdiff_ratio: int = 64
    # bsdiff needs ~17x its window in memory and turns quadratic on repetitive content (a 12 MiB
    # window of padding and repeated tables took 30-40 s): only small windows, within a budget.
    bsdiff_max_window: int = 4 * MiB
    bsdiff_budget: int = 32 * MiB  # bytes of reference bsdiff may index per delta
    stream_max_file: int = 1 * MiB  # new files up to this size go through the shared stream
    stream_dict_bytes: int = 1 * MiB  # old neighbours of new files that prime the stream
    stream_dict_file: int = 256 * 1024  # largest old file taken into the stream dictionary


DEFAULT_OPTIONS: Final = EncodeOptions()


@dataclass(frozen=True)
class DeltaStats:
    """What build_delta wrote."""

    delta_bytes: int
    manifest_bytes: int
    files: int
    files_copied: int
    files_encoded: int
    files_new: int
    bytes_copied: int
    bytes_encoded: int
    pieces: dict[str, int] = field(default_factory=dict)
    payload_bytes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def should_publish(delta_size: int, full_size: int, min_saving: float = 0.30) -> bool:
    """Whether a delta saves at least `min_saving` of the full archive's size."""
    return full_size > 0 and delta_size <= full_size * (1.0 - min_saving)


def build_delta(
    old_root: Path | str,
    old_manifest: FileManifest,
    new_root: Path | str,
    new_manifest: FileManifest,
    out_path: Path | str,
    *,
    base_version: str,
    target_version: str,
    options: EncodeOptions = DEFAULT_OPTIONS,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> DeltaStats:
    """Write the delta that turns `old_root` (described by `old_manifest`) into `new_root`.

    The manifests must describe the trees (`scan_manifest`); every file read is checked
    against them (DeltaError if a tree changed meanwhile). The delta is written to a temporary
    file beside `out_path` and renamed over it at the end. `progress(done, total)` counts bytes
    of the new release.
    """
    started = time.perf_counter()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as fh:
            encoder = _Encoder(Path(old_root), old_manifest, Path(new_root), new_manifest,
                               DeltaWriter(fh), options, progress, cancel)
            encoder.run(DeltaHeader(base_version, old_manifest.digest, target_version, new_manifest.digest))
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
    return encoder.stats(time.perf_counter() - started)


class _Encoder:
    def __init__(self, old_root: Path, old: FileManifest, new_root: Path, new: FileManifest, writer: DeltaWriter,
                 options: EncodeOptions, progress: Callable[[int, int], None] | None,
                 cancel: Callable[[], bool] | None) -> None:
        self.old_root, self.old, self.new_root, self.new = old_root, old, new_root, new
        self.w = writer
        self.opts = options
        self.progress = progress
        self.cancel = cancel
        self.budget = options.bsdiff_budget
        self.manifest_bytes = 0
        self.counts = {"copied": 0, "encoded": 0, "new": 0, "bytes_copied": 0, "bytes_encoded": 0}
        self.pieces: dict[str, int] = {name: 0 for name in PIECE_NAMES.values()}
        self.payload: dict[str, int] = {name: 0 for name in PIECE_NAMES.values()}
        self.by_hash: dict[str, str] = {}
        self.by_name: dict[str, list[ManifestEntry]] = {}
        self.by_dir: dict[str, list[ManifestEntry]] = {}
        for entry in old.entries:
            if entry.kind == FILE:
                self.by_hash.setdefault(entry.sha256, entry.path)
                parent, _, name = entry.path.rpartition("/")
                self.by_name.setdefault(name, []).append(entry)
                self.by_dir.setdefault(parent, []).append(entry)

    def run(self, header: DeltaHeader) -> None:
        frame = zref_encode(self.old.to_bytes(), self.new.to_bytes(), self.opts.level_small)
        self.manifest_bytes = len(frame)
        self.streamed = self._stream_candidates()
        dict_paths = self._stream_dictionary(self.streamed)
        self.w.start(header, frame, dict_paths)
        total, done = self.new.total_size, 0
        run_start, run_len = 0, 0
        for index, entry in enumerate(self.new.files):
            if self.cancel is not None and self.cancel():
                raise CancelledError("cancelled while building the delta")
            old = self.old.get(entry.path)
            if old is not None and old.kind == FILE and old.sha256 == entry.sha256:
                if run_len == 0:
                    run_start = index
                run_len += 1
                self._copied(entry)
                continue
            if run_len:
                self.w.run(run_start, run_len)
                run_len = 0
            if entry.sha256 in self.by_hash:
                self.w.copy(index, self.by_hash[entry.sha256], entry.path)
                self._copied(entry)
            elif entry.path in self.streamed:
                self._stream_file(index, entry)
            else:
                ref = old if old is not None and old.kind == FILE else self._similar(entry)
                self._encode_file(index, entry, ref, same_path=old is not None and ref is old)
            done += entry.size
            if self.progress is not None:
                self.progress(done, total)
        if run_len:
            self.w.run(run_start, run_len)
        if self.progress is not None:
            self.progress(total, total)
        self.w.end()

    def _copied(self, entry: ManifestEntry) -> None:
        self.counts["copied"] += 1
        self.counts["bytes_copied"] += entry.size

    def _similar(self, entry: ManifestEntry) -> ManifestEntry | None:
        """An old file with the same name elsewhere (moved and edited), closest in size."""
        candidates = self.by_name.get(entry.path.rpartition("/")[2])
        if not candidates:
            return None
        return min(candidates, key=lambda c: abs(c.size - entry.size))

    def _stream_candidates(self) -> set[str]:
        """New small files with nothing to refer to: they go through the shared stream."""
        out = set()
        for entry in self.new.files:
            old = self.old.get(entry.path)
            if ((old is None or old.kind != FILE) and entry.sha256 not in self.by_hash
                    and 0 < entry.size <= self.opts.stream_max_file and self._similar(entry) is None):
                out.add(entry.path)
        return out

    def _stream_dictionary(self, streamed: set[str]) -> list[int]:
        """Old files beside the new ones (same extension first, largest first), round robin, to a budget.

        Their contents prime the stream: a new module shares imports, names and idioms with
        its neighbours (measured: 15 new files, 26.4 KB compressed one by one, 14.3 KB
        through a primed stream).
        """
        queues: list[list[ManifestEntry]] = []
        for path in sorted(streamed):
            parent, _, name = path.rpartition("/")
            ext = name.rpartition(".")[2] if "." in name else ""
            siblings = [e for e in self.by_dir.get(parent, ()) if e.size <= self.opts.stream_dict_file]
            siblings.sort(key=lambda e: (not e.path.endswith("." + ext) if ext else True, -e.size, e.path))
            queues.append(siblings)
        chosen: list[str] = []
        seen: set[str] = set()
        budget = self.opts.stream_dict_bytes
        depth = 0
        while budget > 0 and any(depth < len(q) for q in queues):
            for queue in queues:
                if depth < len(queue) and queue[depth].path not in seen and queue[depth].size <= budget:
                    seen.add(queue[depth].path)
                    chosen.append(queue[depth].path)
                    budget -= queue[depth].size
            depth += 1
        parts = []
        for path in chosen:
            entry = self.old.get(path)
            assert entry is not None
            data = _read_checked(self.old_root / path, entry, "old release")
            parts.append(data)
        self.stream = StreamEncoder(b"".join(parts), self.opts.level_small)
        self.stream_dict_bytes = sum(len(p) for p in parts)
        index = {e.path: i for i, e in enumerate(self.old.files)}
        return [index[path] for path in chosen]

    def _stream_file(self, index: int, entry: ManifestEntry) -> None:
        self.counts["new"] += 1
        self.counts["bytes_encoded"] += entry.size
        self.w.file(index, None, entry.path)
        data = _read_checked(self.new_root / entry.path, entry, "new release")
        payload = self.stream.piece(data)
        self.w.piece_raw(len(data), payload, PIECE_STREAM)
        self.count(PIECE_STREAM, len(payload))

    def stats(self, seconds: float) -> DeltaStats:
        return DeltaStats(
            delta_bytes=self.w.written, manifest_bytes=self.manifest_bytes, files=len(self.new.files),
            files_copied=self.counts["copied"], files_encoded=self.counts["encoded"], files_new=self.counts["new"],
            bytes_copied=self.counts["bytes_copied"], bytes_encoded=self.counts["bytes_encoded"],
            pieces=dict(self.pieces), payload_bytes=dict(self.payload), seconds=round(seconds, 3))

    # ----------------------------------------------------------------------- one file

    def _encode_file(self, index: int, entry: ManifestEntry, ref: ManifestEntry | None, *, same_path: bool) -> None:
        self.counts["encoded" if same_path else "new"] += 1
        self.counts["bytes_encoded"] += entry.size
        self.w.file(index, ref.path if ref is not None else None, entry.path)
        new_fd = os.open(self.new_root / entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        ref_fd = -1
        try:
            if ref is not None:
                ref_fd = os.open(self.old_root / ref.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                if os.fstat(ref_fd).st_size != ref.size:
                    raise DeltaError(f"old release file {ref.path} does not match its manifest")
            _FileEncoder(self, new_fd, entry, ref_fd, ref.size if ref is not None else 0).run()
        finally:
            os.close(new_fd)
            if ref_fd >= 0:
                os.close(ref_fd)

    def count(self, method: int, payload: int) -> None:
        name = PIECE_NAMES[method]
        self.pieces[name] += 1
        self.payload[name] += payload


class _FileEncoder:
    """Cuts one file into pieces and writes the cheapest encoding of each."""

    def __init__(self, enc: _Encoder, new_fd: int, entry: ManifestEntry, ref_fd: int, ref_size: int) -> None:
        self.enc, self.opts, self.w = enc, enc.opts, enc.w
        self.new_fd, self.entry, self.ref_fd, self.ref_size = new_fd, entry, ref_fd, ref_size
        self.pending: tuple[int, int] | None = None  # a RANGE not written yet (ref_off, length)

    def run(self) -> None:
        opts, size = self.opts, self.entry.size
        digest = hashlib.sha256()
        whole_ref = self.ref_fd >= 0 and size <= opts.chunk_size and self.ref_size <= opts.chunk_size + 2 * opts.margin
        shift = 0
        pos = 0
        while pos < size:
            if self.enc.cancel is not None and self.enc.cancel():
                raise CancelledError("cancelled while building the delta")
            n = min(opts.chunk_size, size - pos)
            data = _pread(self.new_fd, n, pos)
            digest.update(data)
            if self.ref_fd < 0:
                self._flush_range()
                self._raw(data)
                pos += n
                continue
            expect = pos + shift
            if expect >= 0 and expect + n <= self.ref_size and _pread(self.ref_fd, n, expect) == data:
                self._range(expect, n)
                pos += n
                continue
            self._flush_range()
            if whole_ref:
                lo, hi = 0, self.ref_size
            else:
                lo = min(max(0, expect - opts.margin), self.ref_size)
                hi = min(self.ref_size, max(lo, expect + n + opts.margin))
            window = _pread(self.ref_fd, hi - lo, lo) if hi > lo else b""
            if window:
                self._against(window, lo, data)
                shift = _track(window, lo, data, pos, shift)
            else:
                self._raw(data)
            pos += n
        self._flush_range()
        if pos != size or digest.hexdigest() != self.entry.sha256:
            raise DeltaError(f"new release file {self.entry.path} does not match its manifest")

    def _range(self, ref_off: int, n: int) -> None:
        if self.pending is not None and self.pending[0] + self.pending[1] == ref_off:
            self.pending = (self.pending[0], self.pending[1] + n)
            return
        self._flush_range()
        self.pending = (ref_off, n)

    def _flush_range(self) -> None:
        if self.pending is not None:
            self.w.piece_range(*self.pending)
            self.enc.count(PIECE_RANGE, 0)
            self.pending = None

    def _raw(self, data: bytes) -> None:
        level = self.opts.level_small if len(data) <= self.opts.raw_small_bytes else self.opts.raw_level_large
        frame = raw_encode(data, level)
        self.w.piece_raw(len(data), frame)
        self.enc.count(PIECE_RAW, len(frame))

    def _against(self, window: bytes, lo: int, data: bytes) -> None:
        opts = self.opts
        small = len(window) + len(data) <= opts.small_bytes
        best_method, best = PIECE_ZREF, zref_encode(window, data, opts.level_small if small else opts.level_large)
        if small and len(best) * 4 > len(data):  # the reference hardly helps: maybe it costs
            plain = raw_encode(data, opts.level_small)
            if len(plain) < len(best):
                self.w.piece_raw(len(data), plain)
                self.enc.count(PIECE_RAW, len(plain))
                return
        if self._try_bsdiff(window, data, len(best)):
            if len(window) > opts.bsdiff_always_below:
                self.enc.budget -= len(window)
            patch = bsdiff_encode(window, data, opts.level_small if small else opts.level_large)
            if len(patch) < len(best) and _bsdiff_fits(patch, len(data)):
                best_method, best = PIECE_BSDIFF, patch
        self.w.piece_ref(best_method, lo, len(window), len(data), best)
        self.enc.count(best_method, len(best))

    def _try_bsdiff(self, window: bytes, data: bytes, zstd_size: int) -> bool:
        opts = self.opts
        if len(window) > opts.bsdiff_max_window:
            return False
        if len(data) <= opts.bsdiff_always_below and len(window) <= opts.bsdiff_always_below:
            return True
        return zstd_size * opts.bsdiff_ratio > len(data) and self.enc.budget >= len(window)


def _read_checked(path: Path, entry: ManifestEntry, what: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        data = _pread(fd, entry.size, 0)
        extra = os.pread(fd, 1, entry.size)
    finally:
        os.close(fd)
    if extra or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise DeltaError(f"{what} file {entry.path} does not match its manifest")
    return data


def _bsdiff_fits(payload: bytes, out_len: int) -> bool:
    return 0 <= zstd.frame_content_size(payload) <= bsdiff_payload_cap(out_len)


def _track(window: bytes, lo: int, data: bytes, pos: int, shift: int) -> int:
    """The old-minus-new offset after this piece, from where a sample of its end sits in the old file.

    Runtime binaries repeat themselves (tables, padding), so a sample can occur many times:
    the expected place wins, then the occurrence nearest to it.
    """
    end = len(data) - _SAMPLE
    for off in range(end, max(-1, end - 64 * 4096), -4096):
        sample = data[off:off + _SAMPLE]
        if len(sample) < _SAMPLE or len(set(sample)) < 16:
            continue
        expected = pos + off + shift - lo
        if expected >= 0 and window[expected:expected + _SAMPLE] == sample:
            return shift
        anchor = min(max(0, expected), len(window))
        after = window.find(sample, anchor)
        before = window.rfind(sample, 0, anchor + _SAMPLE - 1)
        found = [i for i in (after, before) if i >= 0]
        if found:
            best = min(found, key=lambda i: abs(i - expected))
            return lo + best - (pos + off)
    return shift


def _pread(fd: int, n: int, offset: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left:
        block = os.pread(fd, left, offset + n - left)
        if not block:
            raise DeltaError("a release file got shorter while the delta was being built")
        parts.append(block)
        left -= len(block)
    return parts[0] if len(parts) == 1 else b"".join(parts)
