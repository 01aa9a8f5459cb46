"""Staging one release: download, verify, extract, finish, verify, record, durable, rename, point.

The same steps stage a runtime (into the data dir) and a shell (into the install root): what
differs is the `Artefact` (how to finish and check a version) and the `VersionStore` (where
versions, records, downloads, the lock and the pointer live).

One stage at a time per store (a cross-process lock). A failure at any step removes the
partial and leaves the pointer and every complete version untouched; a kill -9 at any
instant leaves at worst a stale partial (removed by the next stage or gc) and a pointer that
names a complete, verified version or nothing.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import os
import secrets
import shutil
import stat
import struct
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packaging.version import Version

from desktop.core import faults
from desktop.core.archive import (
    STREAM_FORMATS,
    Digests,
    detect_format,
    make_durable,
    safe_extract,
    safe_extract_stream,
    sniff_format,
)
from desktop.core.config import AppConfig
from desktop.core.delta import FileManifest, apply_delta, scan_manifest
from desktop.core.digests import Integrity
from desktop.core.download import ensure_free_space, free_bytes
from desktop.core.errors import (
    BusyError,
    CancelledError,
    DesktopError,
    DiskSpaceError,
    DownloadError,
    InvalidReleaseError,
    ManifestError,
    NativeDepError,
    StateError,
)
from desktop.core.launching import staged_problem
from desktop.core.leases import Leases
from desktop.core.limits import ExtractLimits
from desktop.core.manifest import RuntimeManifest, verify_version_dir
from desktop.core.paths import VersionStore
from desktop.core.pointer import Pointer, advance_pointer, change_pointer
from desktop.core.records import build_record, file_sha256, read_files_manifest, write_record
from desktop.core.registry import Cancel, DeltaSource, Registry, Release
from desktop.core.results import Phase, Progress, UpdateOutcome
from desktop.core.stagelock import Busy, stage_lock
from desktop.core.state import atomic_write_bytes, fsync_dir
from desktop.core.text import mb, one_line
from desktop.core.tree import remove_tree, remove_tree_quietly, walk

log = logging.getLogger(__name__)

StageProgress = Callable[[Progress], None]
UNPACKED_RATIO = 4  # estimate of unpacked size / archive size when the release does not say


@dataclass(frozen=True)
class StageResult:
    outcome: UpdateOutcome
    version: Version | None
    bytes_downloaded: int = 0
    delta: bool = False


class Artefact(Protocol):
    """What is being staged: where its versions live and how a version is finished and checked."""

    store: VersionStore
    limits: ExtractLimits
    reserve: int  # bytes to leave free on the disk

    def problem(self, version: Version) -> str | None:
        """Why the complete version directory cannot be used (None: it verifies)."""

    def finish(self, partial: Path, version: Version) -> tuple[str, tuple[str, ...]]:
        """Complete and verify an extracted partial (raise InvalidReleaseError); return the entry and
        the trees to hash at every launch, for the record."""

    def in_use(self, version: Version) -> bool:
        """Whether a live process runs `version` (its directory must not be replaced under it)."""

    def delta_base(self, version: Version) -> tuple[Path, FileManifest] | None:
        """A local, healthy `version` a delta may start from: its directory and file manifest as published."""


class RuntimeArtefact:
    """A runtime release: the manifest contract, the host gate and the bundled native deps."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.store = config.data.runtimes
        self.limits = config.limits
        self.reserve = config.net.min_free_bytes

    def problem(self, version: Version) -> str | None:
        return staged_problem(self.config, version)

    def in_use(self, version: Version) -> bool:
        return any(lease.version == version for lease in Leases(self.config.data.leases_dir).live())

    def delta_base(self, version: Version) -> tuple[Path, FileManifest] | None:
        if self.store.version_dir(version).is_dir() and staged_problem(self.config, version) is None:
            manifest = read_files_manifest(self.store.files_manifest(version))
            if manifest is not None:
                return self.store.version_dir(version), manifest
        try:  # the runtime shipped with the app, as published (scanned only when a delta starts there)
            if RuntimeManifest.load(self.config.bundled_runtime).version == version:
                return self.config.bundled_runtime, scan_manifest(self.config.bundled_runtime)
        except (DesktopError, OSError) as exc:
            log.info("the bundled runtime is no delta base: %s", exc)
        return None

    def finish(self, partial: Path, version: Version) -> tuple[str, tuple[str, ...]]:
        manifest = _install_native(self.config, partial)
        verify_version_dir(partial, expected=version, shell_version=self.config.shell_version,
                           native_root=self.config.native_root)
        return manifest.entry, manifest.native


def is_leftover(name: str) -> bool:
    """Names of stale staging leftovers in versions/ (never a complete version)."""
    return (name.endswith(".partial") or ".partial." in name or ".damaged-" in name
            or name.startswith("."))


def clean_partials(store: VersionStore) -> tuple[list[str], list[str]]:
    """Remove stale partials and leftovers (call only under the lock): (removed, could not remove)."""
    removed: list[str] = []
    stuck: list[str] = []
    try:
        children = sorted(os.listdir(store.versions_dir))
    except OSError:
        return removed, stuck
    for name in children:
        if not is_leftover(name):
            continue
        if remove_tree_quietly(store.versions_dir / name):
            removed.append(name)
        else:
            stuck.append(name)
            log.warning("cannot remove the stale %s (is it owned by another user?); staging goes on without it",
                        store.versions_dir / name)
    if removed:
        fsync_dir(store.versions_dir)
    return removed, stuck


def stage(config: AppConfig, registry: Registry, release: Release, *,
          progress: StageProgress | None = None, cancel: Cancel | None = None) -> StageResult:
    """Stage a runtime release under the cross-process lock; raises DesktopError on failure."""
    return stage_artefact(RuntimeArtefact(config), registry, release, progress=progress, cancel=cancel)


def stage_artefact(artefact: Artefact, registry: Registry, release: Release, *,
                   progress: StageProgress | None = None, cancel: Cancel | None = None) -> StageResult:
    """Stage `release` of `artefact` under its store's lock; raises DesktopError on failure."""
    try:
        with stage_lock(artefact.store):
            return _stage_locked(artefact, registry, release, progress, cancel)
    except Busy:
        return StageResult(UpdateOutcome.BUSY, release.version)


def _stage_locked(artefact: Artefact, registry: Registry, release: Release,
                  progress: StageProgress | None, cancel: Cancel | None) -> StageResult:
    store = artefact.store
    version = release.version
    clean_partials(store)
    final = store.version_dir(version)
    archive = store.downloads_dir / f"{version}-{release_tag(release)}.archive"
    if os.path.lexists(final):
        problem = artefact.problem(version)
        if problem is None:
            with contextlib.suppress(OSError):
                archive.unlink()  # left by a stage killed after its rename
            moved = point_at(store, version)
            log.info("version %s is already staged%s", version, " (adopted)" if moved else "")
            return StageResult(UpdateOutcome.ALREADY_STAGED, version)
        if artefact.in_use(version):
            raise BusyError(f"version {version} does not verify ({problem}) but is running; it is staged again "
                            "once it has stopped")
        log.warning("re-staging %s: its directory does not verify (%s)", version, problem)
        _set_aside(final)
    partial = _partial_path(store, version)
    received = 0

    def on_extract(done: int) -> None:
        faults.reached("mid-extract")
        if progress:
            progress(Progress(Phase.EXTRACT, done, release.unpacked_size))

    def on_download(done: int, total: int | None) -> None:
        if progress:
            progress(Progress(Phase.DOWNLOAD, done, total))

    try:
        files: FileManifest | None = None
        part = archive.with_name(archive.name + ".part")
        if isinstance(registry, DeltaSource) and not _reusable(archive, release) and not os.path.lexists(part):
            received, files = _try_delta(artefact, registry, release, partial, on_download, on_extract, cancel)
        delta = files is not None
        written: Digests | None = None  # what an extraction wrote (hashed as written), or None
        if not delta and not _reusable(archive, release):
            unpacked = release.unpacked_size or (release.size or 0) * UNPACKED_RATIO
            have = part.stat().st_size if part.is_file() and not part.is_symlink() else 0
            ensure_free_space(store.downloads_dir, max((release.size or 0) - have, 0) + unpacked, artefact.reserve)
            if os.path.lexists(part):
                received += registry.download(release, archive, cancel=cancel, progress=on_download)
            else:
                got, written = _download_and_extract(artefact, registry, release, archive, partial,
                                                       on_download, on_extract, cancel)
                received += got
        faults.reached("after-download")
        if not delta and written is None:
            ensure_free_space(store.versions_dir, estimate_unpacked_size(archive, release), artefact.reserve)
            written = safe_extract(archive, partial, artefact.limits, cancel=cancel, progress=on_extract,
                                   hash_files=True)
        if progress:
            progress(Progress(Phase.VERIFY, 0, None))
        signed_files = release.extra.get("files_sha256")
        if files is None and isinstance(signed_files, str):
            # The release as extracted, before anything is added: what a later delta starts from.
            files = scan_manifest(partial, cancel=cancel, known=written)
            if files.digest != signed_files:
                raise ManifestError(f"the archive of {version} does not match its signed file manifest")
        entry, hashed = artefact.finish(partial, version)
        record = build_record(version, partial, entry, hashed, known=written)
        written = None  # one digest per file: not held while the record is written
        write_record(store.record_file(version), record)
        del record
        if files is not None:
            atomic_write_bytes(store.files_manifest(version), files.to_bytes())
        faults.reached("partial-complete")
        make_durable(partial)
        os.rename(partial, final)
        fsync_dir(store.versions_dir)
        faults.reached("after-rename")
    except BaseException as exc:
        remove_tree_quietly(partial)
        if isinstance(exc, InvalidReleaseError):
            # The bytes are the problem: keeping them would only fail again.
            with contextlib.suppress(OSError):
                archive.unlink()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(f"not enough disk space to stage {version}: have "
                                 f"{mb(free_bytes(store.versions_dir))} free") from None
        if isinstance(exc, OSError) and not isinstance(exc, DesktopError):
            raise StateError(f"cannot stage {version}: {exc.strerror or exc}") from None
        raise
    with contextlib.suppress(OSError):
        archive.unlink()
    point_at(store, version)
    log.info("staged version %s%s", version, " from a delta" if delta else "")
    return StageResult(UpdateOutcome.STAGED, version, received, delta)


class _DownloadFailed(Exception):
    """The download under an extraction failed; its own error is raised once it is joined."""


class _GrowingFile:
    """Reads the partial download while another thread appends to it: `read(n)` blocks until bytes
    arrive or the download ends (b"" once everything written was read)."""

    def __init__(self, path: Path, cancel: Cancel | None) -> None:
        self.path = path
        self.cancel = cancel
        self._cond = threading.Condition()
        self._written = 0
        self._done = False
        self._failed = False
        self._pos = 0
        self._fd: int | None = None

    def advance(self, written: int) -> None:
        if self._fd is None:
            # Opened by the download's own thread, before its first bytes are reported: the file
            # exists now and keeps existing for this reader even once it is renamed.
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with self._cond:
            self._written = written
            self._cond.notify_all()

    def finish(self, *, failed: bool) -> None:
        with self._cond:
            self._done, self._failed = True, failed
            self._cond.notify_all()

    def _wait(self, want: int) -> int:
        with self._cond:
            while self._written - self._pos < want and not self._done:
                if self.cancel is not None and self.cancel():
                    raise CancelledError("download cancelled")
                self._cond.wait(0.25)
            if self._failed:
                raise _DownloadFailed()
            return self._written - self._pos

    def peek(self, n: int) -> bytes:
        available = self._wait(n)
        if available <= 0:
            return b""
        return os.pread(self._open(), min(n, available), 0)

    def read(self, n: int) -> bytes:
        available = self._wait(1)
        if available <= 0:
            return b""
        data = os.pread(self._open(), min(n, available), self._pos)
        if not data:
            raise _DownloadFailed()  # reported written but not in the file: never treat it as the end
        self._pos += len(data)
        return data

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _download_and_extract(artefact: Artefact, registry: Registry, release: Release, archive: Path, partial: Path,
                          on_download: Callable[[int, int | None], None], on_extract: Callable[[int], None],
                          cancel: Cancel | None) -> tuple[int, Digests | None]:
    """Download and extract at once (tar formats): the archive is never read twice. The bytes are
    verified when the download ends; an extraction error counts against the release only if they
    matched (else the download's own, transient, error is raised). Returns (bytes received, what was
    extracted or None when the archive is not a stream format)."""
    stopping = threading.Event()

    def cancelled() -> bool:
        return stopping.is_set() or (cancel is not None and cancel())

    growing = _GrowingFile(archive.with_name(archive.name + ".part"), cancel)
    outcome: dict[str, object] = {}

    def progress(done: int, total: int | None) -> None:
        growing.advance(done)
        on_download(done, total)

    def fetch() -> None:
        try:
            outcome["received"] = registry.download(release, archive, cancel=cancelled, progress=progress)
        except BaseException as exc:  # raised in the staging thread once joined
            outcome["error"] = exc
        finally:
            growing.finish(failed="error" in outcome)

    thread = threading.Thread(target=fetch, name="download", daemon=True)
    thread.start()
    extracted: Digests | None = None
    failure: BaseException | None = None
    try:
        head = growing.peek(8)
        fmt = sniff_format(head) if head else None
        if fmt in STREAM_FORMATS:
            assert fmt is not None
            extracted = safe_extract_stream(growing.read, partial, fmt, artefact.limits, progress=on_extract,
                                            cancel=cancel, hash_files=True)
    except _DownloadFailed:
        pass
    except BaseException as exc:
        failure = exc
        stopping.set()  # do not wait for the rest of a download whose extraction already failed
    finally:
        thread.join()
        growing.close()
    error = outcome.get("error")
    if failure is not None and (not isinstance(failure, Exception) or isinstance(failure, CancelledError)):
        raise failure  # an interrupt or the user's cancel
    if isinstance(error, BaseException):
        if failure is not None and isinstance(error, CancelledError) and not (cancel is not None and cancel()):
            # Stopped early because the extraction failed: the bytes were never verified, so this is
            # not yet the release's fault. The partial download is kept; the next attempt completes it,
            # verifies it and only then judges the archive.
            raise DownloadError(f"the archive of {release.version} looked broken before it had fully arrived "
                                f"({failure}); it is checked again once complete") from None
        raise error  # the bytes were not verified: whatever the extraction said, it is the download's fault
    if failure is not None:
        raise failure
    received = outcome.get("received")
    return (received if isinstance(received, int) else 0), extracted


def _try_delta(artefact: Artefact, registry: DeltaSource, release: Release, partial: Path,
               on_download: Callable[[int, int | None], None], on_extract: Callable[[int], None],
               cancel: Cancel | None) -> tuple[int, FileManifest | None]:
    """Rebuild the release from a local version and a signed delta, verified file by file against the
    release's signed manifest. Any failure leaves nothing behind and returns no manifest: the full
    archive is used instead, in the same update, and nothing is pinned. Returns (bytes received,
    the verified file manifest or None)."""
    received = 0
    for offer in registry.delta_offers(release):
        local = artefact.delta_base(offer.base)
        if local is None or local[1].digest != offer.base_files_sha256:
            continue
        base, (directory, base_files) = offer.base, local
        delta_file = artefact.store.downloads_dir / f"{release.version}-{release_tag(release)}.from-{base}.delta"
        try:
            received += registry.download_delta(offer, delta_file, progress=on_download, cancel=cancel)
            faults.reached("delta-downloaded")
            with open(delta_file, "rb") as handle:
                stats = apply_delta(handle.read, directory, base_files, offer.files_sha256, partial,
                                    progress=lambda done, total: on_extract(done), cancel=cancel)
            log.info("rebuilt %s from %s with a %d-byte delta", release.version, base, offer.length)
            return received, stats.manifest
        except CancelledError:
            raise
        except (DesktopError, OSError) as exc:
            log.warning("the delta from %s did not rebuild %s (%s); downloading the full archive",
                        base, release.version, one_line(str(exc)))
            remove_tree_quietly(partial)
        finally:
            with contextlib.suppress(OSError):
                delta_file.unlink()
    return received, None


def _partial_path(store: VersionStore, version: Version) -> Path:
    """versions/<v>.partial, or a unique name beside it if a stale one cannot be removed."""
    partial = store.partial_dir(version)
    if os.path.lexists(partial) and not remove_tree_quietly(partial):
        partial = store.versions_dir / f"{version}.{secrets.token_hex(4)}.partial"
    return partial


def _set_aside(final: Path) -> None:
    """Remove a version directory that no longer verifies (moved aside first: the rename is atomic)."""
    aside = final.with_name(f"{final.name}.damaged-{secrets.token_hex(4)}")
    try:
        os.rename(final, aside)
    except OSError as exc:
        raise StateError(f"cannot replace the damaged {final}: {exc.strerror or exc}") from None
    fsync_dir(final.parent)
    remove_tree_quietly(aside)


def _reusable(archive: Path, release: Release) -> bool:
    """A complete cached download is re-verified before every reuse."""
    try:
        st = archive.lstat()
    except OSError:
        return False
    ok = archive.is_file() and not archive.is_symlink() and (release.size is None or st.st_size == release.size)
    if ok and release.integrity is not None:
        ok = _digest(archive, release.integrity) == release.integrity.digest
    if not ok:
        log.warning("the cached download %s does not match the release; downloading it again", archive.name)
        with contextlib.suppress(OSError):
            archive.unlink()
    return ok


def _digest(path: Path, integrity: Integrity) -> bytes:
    if integrity.algorithm == "sha256":
        return bytes.fromhex(file_sha256(path))
    hasher = integrity.hasher()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.digest()


def point_at(store: VersionStore, version: Version) -> bool:
    """Move the store's pointer forward to `version` (never backwards); True if it moved."""
    def forward(pointer: Pointer | None) -> Pointer | None:
        if pointer is not None and pointer.version >= version:
            return pointer
        return advance_pointer(pointer, version)

    new = change_pointer(store.pointer_file, forward)
    return new is not None and new.version == version


def _install_native(config: AppConfig, partial: Path) -> RuntimeManifest:
    manifest = RuntimeManifest.load(partial)
    for name in manifest.native:
        source = config.native_root / name
        if not source.exists():
            # This shell's doing, not the release's: a newer shell may bundle it (the pin says so).
            raise NativeDepError(f"the runtime needs native dependency {name!r}, which this shell does not bundle")
        target = partial / name
        try:
            remove_tree(target)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target)
            _make_private(target)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StateError(f"cannot install native dependency {name!r}: {exc.strerror or exc}") from None
    return manifest


def _make_private(root: Path) -> None:
    """Modes of a copied native dependency, like everything else in a version: the user's only."""
    entries = [root] if not root.is_dir() or root.is_symlink() else [root, *(Path(e.path) for e in walk(root))]
    for path in entries:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        private = 0o700 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o600
        os.chmod(path, private)


def release_tag(release: Release) -> str:
    import hashlib

    return hashlib.sha256(release.artefact_key.encode()).hexdigest()[:16]


def estimate_unpacked_size(archive: Path, release: Release) -> int:
    """An estimate of the unpacked size, to check disk space before extracting."""
    if release.unpacked_size:
        return release.unpacked_size
    size = archive.stat().st_size
    try:
        fmt = detect_format(archive)
        if fmt == "tar.gz":
            with open(archive, "rb") as handle:
                handle.seek(-4, os.SEEK_END)
                isize: int = struct.unpack("<I", handle.read(4))[0]
            # ISIZE is the size modulo 2**32; never estimate below the compressed size.
            return max(isize, size)
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                return sum(info.file_size for info in zf.infolist())
    except (OSError, zipfile.BadZipFile, struct.error, gzip.BadGzipFile, InvalidReleaseError):
        return size
    return size * UNPACKED_RATIO

