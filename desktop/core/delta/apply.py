"""Rebuilding a release tree from its base and a delta, while the delta is read (client side).

The delta is consumed strictly front to back through `read(n)`, so it can be applied while it
downloads. Into `dest` (which must not exist yet) go: every directory of the target manifest,
then one record per regular file in manifest order, then the links. Unchanged files are
copied from the base (reflinked where the filesystem can share extents, a plain copy
otherwise; never hard-linked, since a runtime may write its own files), changed files are
patched piece by piece, new files are decoded. Every file's size and sha256 are checked
against the target manifest as it is written, so the tree is verified when apply returns.

Memory is bounded by the limits, not by the release: at most one reference window, one piece
and its payload are held at a time (with the encoder's defaults: 12 + 8 + 8 MiB).

Any failure removes `dest` and raises DeltaError (disk full: DiskSpaceError; cancel:
CancelledError; errors raised by `read` itself pass through).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zstandard as zstd

from desktop.core.delta.codec import StreamDecoder, bsdiff_decode, raw_decode, zref_decode
from desktop.core.delta.errors import DeltaError, FileManifestError
from desktop.core.delta.format import (
    OP_COPY,
    OP_END,
    OP_FILE,
    OP_RUN,
    PIECE_BSDIFF,
    PIECE_RANGE,
    PIECE_RAW,
    PIECE_STREAM,
    PIECE_ZREF,
    DeltaReader,
)
from desktop.core.delta.manifest import DIR, FILE, LINK, FileManifest, ManifestEntry, ManifestLimits, parse_manifest
from desktop.core.errors import CancelledError, DesktopError, DiskSpaceError
from desktop.core.tree import remove_tree

__all__ = ["ApplyStats", "DeltaLimits", "apply_delta"]

MiB: Final = 1024 * 1024
_COPY_CHUNK: Final = 1 * MiB
_RUN_BATCH: Final = 64  # unchanged files per task on the copy threads
_COPY_WORKERS: Final = min(4, os.cpu_count() or 1)
_FICLONE: Final = 0x40049409  # _IOW(0x94, 9, int): share the source's extents (btrfs, XFS, bcachefs)
_NO_REFLINK: Final = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                errno.EPERM, errno.EBADF})
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_OPEN_NEW: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class DeltaLimits:
    """Caps on what a delta may make the client read, hold in memory and write."""

    max_delta_bytes: int = 4 * 1024**3
    max_files: int = 100_000
    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 2 * 1024**3
    max_piece_bytes: int = 16 * MiB  # one decoded piece in memory
    max_ref_bytes: int = 32 * MiB  # one reference window in memory
    max_window_size: int = 1 << 26  # zstd decoder window
    max_manifest_bytes: int = 64 * MiB
    max_stream_dict_bytes: int = 8 * MiB

    def manifest_limits(self) -> ManifestLimits:
        return ManifestLimits(max_document_bytes=self.max_manifest_bytes, max_entries=self.max_files,
                              max_total_bytes=self.max_total_bytes)


DEFAULT_LIMITS: Final = DeltaLimits()


@dataclass(frozen=True)
class ApplyStats:
    """What apply_delta did; `manifest` is the (verified) target manifest, to record with the version."""

    manifest: FileManifest
    files: int
    files_copied: int
    files_rebuilt: int
    files_reflinked: int
    bytes_written: int
    delta_bytes: int
    seconds: float


def _private(mode: int) -> int:
    """A version lives in the user's private data dir: the manifest's 0o755/0o644 become 0o700/0o600."""
    return 0o700 if mode & 0o111 else 0o600


def apply_delta(
    read: Callable[[int], bytes],
    base_root: Path | str,
    base_manifest: FileManifest,
    target: FileManifest | str,
    dest: Path | str,
    *,
    limits: DeltaLimits = DEFAULT_LIMITS,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ApplyStats:
    """Rebuild the target release into `dest` from `base_root` and the delta read by `read(n)`.

    `base_manifest` is the recorded manifest of the local base version; `target` is the signed
    target manifest, or just its signed sha256 (hex) when the manifest is to be taken from the
    delta itself (it is checked against that digest). `read(n)` returns up to n bytes, b"" at
    the end. `progress(bytes_written, total_bytes)` is called about every MiB, from the calling
    thread; `cancel` may also be called from the copy threads (runs of unchanged files are
    copied on up to four threads).
    """
    started = time.perf_counter()
    dest = Path(dest)
    job = _Apply(read, Path(base_root), base_manifest, target, dest, limits, progress, cancel)
    os.mkdir(dest, 0o700)  # FileExistsError if it exists: never touch what we did not create
    try:
        job.run()
    except BaseException as exc:
        job.close()
        remove_tree(dest)
        _translate(exc)
        raise
    assert job.manifest is not None
    return ApplyStats(manifest=job.manifest, files=len(job.files), files_copied=job.copied,
                      files_rebuilt=len(job.files) - job.copied, files_reflinked=job.reflinked,
                      bytes_written=job.written, delta_bytes=job.reader.consumed,
                      seconds=round(time.perf_counter() - started, 3))


def _translate(exc: BaseException) -> None:
    if isinstance(exc, DesktopError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return
    if isinstance(exc, FileManifestError):
        raise DeltaError(f"delta carries a bad target manifest: {exc}") from exc
    if isinstance(exc, OSError):
        if exc.errno in _DISK_FULL:
            raise DiskSpaceError("not enough disk space to apply the delta") from exc
        where = f" ({exc.filename})" if exc.filename else ""
        raise DeltaError(f"delta could not be applied: {exc.strerror or type(exc).__name__}{where}") from exc
    if isinstance(exc, MemoryError | zstd.ZstdError | ValueError | OverflowError):
        raise DeltaError(f"corrupt delta: {type(exc).__name__}: {str(exc)[:200]}") from exc


class _Apply:
    def __init__(self, read: Callable[[int], bytes], base_root: Path, base: FileManifest,
                 target: FileManifest | str, dest: Path, limits: DeltaLimits,
                 progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None) -> None:
        self.reader = DeltaReader(read, limits.max_delta_bytes)
        self.base_root, self.base, self.target, self.dest = base_root, base, target, dest
        self.base_prefix = os.fspath(base_root) + "/"  # plain strings: pathlib costs 25 us a file
        self.dest_prefix = os.fspath(dest) + "/"
        self.limits, self.progress, self.cancel = limits, progress, cancel
        self.manifest: FileManifest | None = None
        self.files: tuple[ManifestEntry, ...] = ()
        self.copied = self.reflinked = self.written = self.total = 0
        self.reported = 0
        self.reflink_ok = True
        self.open_fds: list[int] = []
        self.stream_dict: list[int] = []
        self.cancelled_copies = False
        self.stream: StreamDecoder | None = None

    def close(self) -> None:
        for fd in self.open_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.open_fds.clear()

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("cancelled while applying the delta")

    def report(self, force: bool = False) -> None:
        if self.progress is not None and (force or self.written - self.reported >= MiB):
            self.reported = self.written
            self.progress(self.written, self.total)

    # ----------------------------------------------------------------------- stream

    def run(self) -> None:
        header = self.reader.header()
        if header.base_manifest_sha256 != self.base.digest:
            raise DeltaError(f"delta was made for another base than the local {header.base_version}")
        expected = self.target.digest if isinstance(self.target, FileManifest) else self.target.lower()
        if header.target_manifest_sha256 != expected:
            raise DeltaError(f"delta does not produce the signed target manifest of {header.target_version}")
        manifest = self._manifest(expected)
        self.manifest = manifest
        self.stream_dict = self.reader.stream_dict()
        self.files = manifest.files
        self.total = manifest.total_size
        if len(manifest.entries) > self.limits.max_files:
            raise DeltaError(f"target has more than {self.limits.max_files} entries")
        if self.total > self.limits.max_total_bytes:
            raise DeltaError(f"target is larger than the limit of {self.limits.max_total_bytes} bytes")
        if any(e.size > self.limits.max_file_bytes for e in self.files):
            raise DeltaError(f"target has a file larger than the limit of {self.limits.max_file_bytes} bytes")
        for entry in manifest.entries:
            if entry.kind == DIR:
                path = self.dest / entry.path
                os.mkdir(path, 0o700)
                os.chmod(path, 0o700)
        index = 0
        while index < len(self.files):
            self.check_cancel()
            op = self.reader.u8()
            if op not in (OP_COPY, OP_FILE, OP_RUN) or self.reader.u32() != index:
                raise DeltaError(f"corrupt delta: unexpected record for {self.files[index].path}")
            if op == OP_RUN:
                count = self.reader.u32()
                if count == 0 or index + count > len(self.files):
                    raise DeltaError("corrupt delta: a run of unchanged files goes past the last file")
                self._copy_run(self.files[index:index + count])
                index += count
                continue
            entry = self.files[index]
            base_path = self.reader.name(entry.path)
            if op == OP_COPY:
                self._copy(entry, base_path)
            else:
                self._rebuild(entry, base_path)
            self.report()
            index += 1
        if self.reader.u8() != OP_END:
            raise DeltaError("corrupt delta: records go on past the last file")
        self.reader.check_end()
        for entry in manifest.entries:
            if entry.kind == LINK:
                os.symlink(entry.target, self.dest / entry.path)
        self.report(force=True)

    def _manifest(self, expected: str) -> FileManifest:
        size = self.reader.u32()
        if size > self.limits.max_manifest_bytes:
            raise DeltaError("delta's manifest is larger than the limit")
        frame = self.reader.exact(size)
        try:
            declared = zstd.frame_content_size(frame)
        except zstd.ZstdError:
            raise DeltaError("corrupt delta: manifest is not a zstd frame") from None
        if not 0 <= declared <= self.limits.max_manifest_bytes:
            raise DeltaError("delta's manifest is larger than the limit")
        data = zref_decode(self.base.to_bytes(), frame, declared, 1 << 31)
        if hashlib.sha256(data).hexdigest() != expected:
            raise DeltaError("delta's manifest does not match the signed digest")
        if isinstance(self.target, FileManifest):
            return self.target
        return parse_manifest(data, self.limits.manifest_limits())

    # ----------------------------------------------------------------------- files

    def _base_entry(self, path: str) -> ManifestEntry:
        entry = self.base.get(path)
        if entry is None or entry.kind != FILE:
            raise DeltaError(f"corrupt delta: {path!r} is not a file of the base version")
        return entry

    def _open_base(self, entry: ManifestEntry) -> int:
        try:
            fd = os.open(self.base_prefix + entry.path, _OPEN_READ)
        except FileNotFoundError:
            raise DeltaError(f"base file {entry.path} is missing") from None
        self.open_fds.append(fd)
        if os.fstat(fd).st_size != entry.size:
            raise DeltaError(f"base file {entry.path} changed on disk (size differs from its record)")
        return fd

    def _create(self, entry: ManifestEntry) -> int:
        fd = os.open(self.dest_prefix + entry.path, _OPEN_NEW, 0o600)
        self.open_fds.append(fd)
        return fd

    def _finish(self, fd: int, entry: ManifestEntry, size: int, digest: str, what: str) -> None:
        os.fchmod(fd, _private(entry.mode))
        self._release(fd)
        if size != entry.size or digest != entry.sha256:
            raise DeltaError(f"{what} {entry.path} does not match the target manifest")

    def _release(self, fd: int) -> None:
        self.open_fds.remove(fd)
        os.close(fd)

    def _copy(self, entry: ManifestEntry, base_path: str) -> None:
        size, reflinked = self._copy_file(entry, base_path)
        self.written += size
        self.copied += 1
        self.reflinked += reflinked

    def _copy_run(self, entries: tuple[ManifestEntry, ...]) -> None:
        """Copy unchanged files; long runs on worker threads (hashing and file I/O release the GIL)."""
        if len(entries) < 2 * _RUN_BATCH or _COPY_WORKERS < 2:
            for entry in entries:
                self.check_cancel()
                self._copy(entry, entry.path)
                self.report()
            return
        batches = [entries[i:i + _RUN_BATCH] for i in range(0, len(entries), _RUN_BATCH)]
        with ThreadPoolExecutor(max_workers=_COPY_WORKERS, thread_name_prefix="delta-copy") as pool:
            futures = [pool.submit(self._copy_batch, batch) for batch in batches]
            try:
                for future in futures:
                    size, reflinked = future.result()
                    self.written += size
                    self.reflinked += reflinked
                    self.report()
            except BaseException:
                self.cancelled_copies = True
                for future in futures:
                    future.cancel()
                raise
        self.copied += len(entries)

    def _copy_batch(self, batch: tuple[ManifestEntry, ...]) -> tuple[int, int]:
        total = reflinked = 0
        for entry in batch:
            if self.cancelled_copies:
                raise CancelledError("another copy failed")
            self.check_cancel()
            size, linked = self._copy_file(entry, entry.path)
            total += size
            reflinked += linked
        return total, reflinked

    def _copy_file(self, entry: ManifestEntry, base_path: str) -> tuple[int, int]:
        """Copy one base file to its target place, hashing what is written; (size, 1 if reflinked)."""
        base = self._base_entry(base_path)
        if base.sha256 != entry.sha256 or base.size != entry.size:
            raise DeltaError(f"corrupt delta: {base_path} is not the content of {entry.path}")
        try:
            src = os.open(self.base_prefix + base.path, _OPEN_READ)
        except FileNotFoundError:
            raise DeltaError(f"base file {base.path} is missing") from None
        dst = -1
        try:
            if os.fstat(src).st_size != base.size:
                raise DeltaError(f"base file {base.path} changed on disk (size differs from its record)")
            dst = os.open(self.dest_prefix + entry.path, _OPEN_NEW, 0o600)
            digest = hashlib.sha256()
            size = 0
            reflinked = 0
            if self.reflink_ok and entry.size >= 64 * 1024 and self._reflink(src, dst):
                reflinked = 1
                while block := os.pread(dst, _COPY_CHUNK, size):
                    digest.update(block)
                    size += len(block)
            else:
                while block := os.read(src, _COPY_CHUNK):
                    digest.update(block)
                    _write_all(dst, block)
                    size += len(block)
                    if size > entry.size:
                        break
            os.fchmod(dst, _private(entry.mode))
        finally:
            os.close(src)
            if dst >= 0:
                os.close(dst)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise DeltaError(f"base file {base.path} changed on disk (content differs from its record)")
        return size, reflinked

    def _reflink(self, src: int, dst: int) -> bool:
        try:
            fcntl.ioctl(dst, _FICLONE, src)
        except OSError as exc:
            if exc.errno in _NO_REFLINK:
                self.reflink_ok = False
                return False
            raise
        return True

    def _rebuild(self, entry: ManifestEntry, base_path: str) -> None:
        base_fd, base_size = -1, 0
        if base_path:
            base = self._base_entry(base_path)
            base_fd, base_size = self._open_base(base), base.size
        dst = self._create(entry)
        digest = hashlib.sha256()
        done = 0
        lim = self.limits
        while done < entry.size:
            self.check_cancel()
            method = self.reader.u8()
            left = entry.size - done
            if method == PIECE_RANGE:
                ref_off, out_len = self.reader.range_piece()
                if base_fd < 0 or out_len == 0 or out_len > left or ref_off + out_len > base_size:
                    raise DeltaError(f"corrupt delta: bad range piece in {entry.path}")
                self._copy_range(base_fd, ref_off, out_len, dst, digest)
                done += out_len
                continue
            if method in (PIECE_RAW, PIECE_STREAM):
                out_len, payload_len = self.reader.raw_piece()
                ref_off = ref_len = 0
            elif method in (PIECE_ZREF, PIECE_BSDIFF):
                ref_off, ref_len, out_len, payload_len = self.reader.zref()
                if base_fd < 0 or ref_len == 0 or ref_len > lim.max_ref_bytes or ref_off + ref_len > base_size:
                    raise DeltaError(f"corrupt delta: bad reference window in {entry.path}")
            else:
                raise DeltaError(f"corrupt delta: unknown piece type {method} in {entry.path}")
            if out_len == 0 or out_len > left or out_len > lim.max_piece_bytes or payload_len > out_len + MiB:
                raise DeltaError(f"corrupt delta: bad piece length in {entry.path}")
            payload = self.reader.exact(payload_len)
            if method == PIECE_RAW:
                data = raw_decode(payload, out_len, lim.max_window_size)
            elif method == PIECE_STREAM:
                data = self._stream().piece(payload, out_len)
            else:
                ref = _pread_exact(base_fd, ref_len, ref_off)
                decode = zref_decode if method == PIECE_ZREF else bsdiff_decode
                data = decode(ref, payload, out_len, lim.max_window_size)
                del ref
            del payload
            digest.update(data)
            _write_all(dst, data)
            done += out_len
            self.written += out_len
            self.report()
        if base_fd >= 0:
            self._release(base_fd)
        self._finish(dst, entry, done, digest.hexdigest(), "rebuilt file")

    def _stream(self) -> StreamDecoder:
        """The shared stream's decoder, primed with the base files the delta names (checked)."""
        if self.stream is None:
            parts: list[bytes] = []
            total = 0
            base_files = self.base.files
            for index in self.stream_dict:
                if index >= len(base_files):
                    raise DeltaError("corrupt delta: stream dictionary names a file the base does not have")
                entry = base_files[index]
                total += entry.size
                if total > self.limits.max_stream_dict_bytes:
                    raise DeltaError("corrupt delta: stream dictionary is larger than the limit")
                fd = self._open_base(entry)
                data = _pread_exact(fd, entry.size, 0)
                self._release(fd)
                if hashlib.sha256(data).hexdigest() != entry.sha256:
                    raise DeltaError(f"base file {entry.path} changed on disk (content differs from its record)")
                parts.append(data)
            self.stream = StreamDecoder(b"".join(parts))
        return self.stream

    def _copy_range(self, src: int, offset: int, length: int, dst: int, digest: hashlib._Hash) -> None:
        end = offset + length
        while offset < end:
            block = os.pread(src, min(_COPY_CHUNK, end - offset), offset)
            if not block:
                raise DeltaError("base file changed on disk (shorter than its record)")
            digest.update(block)
            _write_all(dst, block)
            offset += len(block)
            self.written += len(block)
            self.report()
            self.check_cancel()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        block = os.pread(fd, n - got, offset + got)
        if not block:
            raise DeltaError("base file changed on disk (shorter than its record)")
        parts.append(block)
        got += len(block)
    return b"".join(parts)
