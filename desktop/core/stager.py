"""Staging one release: download, verify, extract, add native deps, verify, rename, point.

Crash safety: every step before the rename works inside `versions/<v>.partial`, which
no launcher ever looks at; the rename makes a complete, verified version appear at
once; the pointer is written (atomically) only after the rename. A kill -9 at any
instant therefore leaves the pointer on the old version or on the new, complete one.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import logging
import os
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
from packaging.version import Version

from desktop.core.archive import detect_format, safe_extract
from desktop.core.config import AppConfig
from desktop.core.download import Cancel, ensure_free_space
from desktop.core.errors import DesktopError, DiskSpaceError, InvalidReleaseError, ManifestError
from desktop.core.manifest import RuntimeManifest, verify_version_dir
from desktop.core.paths import DataDir
from desktop.core.registry import Registry, Release
from desktop.core.state import Pointer, advance_pointer, change_pointer, fsync_dir

log = logging.getLogger(__name__)

StageProgress = Callable[[str, int, int | None], None]
"""(phase, done, total): phase is "download", "extract" or "verify"."""


class StageOutcome(enum.Enum):
    STAGED = "staged"
    UP_TO_DATE = "up-to-date"
    ALREADY_STAGED = "already-staged"
    BAD_VERSION = "bad-version"
    BUSY = "busy"
    FAILED = "failed"


@dataclass(frozen=True)
class StageResult:
    outcome: StageOutcome
    version: Version | None
    error: DesktopError | None = None
    downloaded: bool = False


class Busy(Exception):
    """Another process holds the staging lock."""


@contextmanager
def stage_lock(data: DataDir, timeout: float = 0) -> Iterator[None]:
    """The cross-process staging lock; raises Busy if another process holds it."""
    data.ensure()
    lock = filelock.FileLock(str(data.stage_lock), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise Busy() from None
    try:
        yield
    finally:
        lock.release()


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def clean_partials(data: DataDir) -> list[Path]:
    """Remove stale `*.partial` (and extraction leftovers); call only while holding the lock."""
    removed = []
    if data.versions_dir.is_dir():
        for child in data.versions_dir.iterdir():
            if child.name.endswith(".partial") or ".partial." in child.name or child.name.startswith("."):
                remove_tree(child)
                removed.append(child)
    if removed:
        fsync_dir(data.versions_dir)
    return removed


def verify_staged(config: AppConfig, version: Version) -> bool:
    """Whether `versions/<version>` is complete and launchable (manifest, entry, native deps)."""
    try:
        verify_version_dir(config.data.version_dir(version), expected=version,
                           shell_version=config.shell_version, native_root=config.native_root)
    except (InvalidReleaseError, OSError) as exc:
        log.warning("staged version %s does not verify: %s", version, exc)
        return False
    return True


def stage(config: AppConfig, registry: Registry, release: Release, *,
          progress: StageProgress | None = None, cancel: Cancel | None = None) -> StageResult:
    """Stage `release` under the cross-process lock; raises DesktopError on failure."""
    try:
        with stage_lock(config.data):
            return _stage_locked(config, registry, release, progress, cancel)
    except Busy:
        return StageResult(StageOutcome.BUSY, release.version)


def _stage_locked(config: AppConfig, registry: Registry, release: Release,
                  progress: StageProgress | None, cancel: Cancel | None) -> StageResult:
    data = config.data
    version = release.version
    clean_partials(data)
    final = data.version_dir(version)
    if final.exists():
        if verify_staged(config, version):
            moved = _point_at(data, version)
            log.info("version %s is already staged%s", version, " (adopted)" if moved else "")
            return StageResult(StageOutcome.ALREADY_STAGED, version)
        log.warning("re-staging %s: its directory does not verify", version)
        remove_tree(final)
        fsync_dir(data.versions_dir)

    archive = data.downloads_dir / f"{version}-{_artefact_tag(release)}.archive"
    partial = data.partial_dir(version)
    try:
        if not archive.exists():
            ensure_free_space(data.downloads_dir, release.size or 0, config.net.min_free_bytes)
            registry.download(
                release, archive, cancel=cancel,
                progress=(lambda done, total: progress("download", done, total)) if progress else None)
        _check_extract_space(archive, data, config.net.min_free_bytes)
        safe_extract(archive, partial, config.limits, cancel=cancel,
                     progress=(lambda done: progress("extract", done, None)) if progress else None)
        if progress:
            progress("verify", 0, None)
        _install_native(config, partial)
        verify_version_dir(partial, expected=version, shell_version=config.shell_version,
                           native_root=config.native_root)
        _sync()
        os.rename(partial, final)
        fsync_dir(data.versions_dir)
    except BaseException as exc:
        remove_tree(partial)
        if isinstance(exc, InvalidReleaseError):
            # The bytes are the problem: keeping them would only re-fail.
            archive.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, DesktopError) and exc.errno == 28:
            raise DiskSpaceError(f"disk full while staging {version}") from exc
        raise
    archive.unlink(missing_ok=True)
    _point_at(data, version)
    log.info("staged version %s", version)
    return StageResult(StageOutcome.STAGED, version, downloaded=True)


def _point_at(data: DataDir, version: Version) -> bool:
    """Move the pointer forward to `version` (never backwards); True if it moved."""
    def forward(pointer: Pointer | None) -> Pointer | None:
        if pointer is not None and pointer.version >= version:
            return pointer
        return advance_pointer(pointer, version)

    new = change_pointer(data.pointer_file, forward)
    return new is not None and new.version == version


def _install_native(config: AppConfig, partial: Path) -> None:
    manifest = RuntimeManifest.load(partial)
    for name in manifest.native:
        source = config.native_root / name
        if not source.exists():
            raise ManifestError(f"runtime needs native dependency {name!r}, which this shell does not bundle")
        target = partial / name
        remove_tree(target)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)


def _artefact_tag(release: Release) -> str:
    return hashlib.sha256(release.artefact_key.encode()).hexdigest()[:16]


def _sync() -> None:
    # One filesystem-wide flush instead of an fsync per extracted file; the rename that
    # follows must not reach the disk before the files it publishes.
    if hasattr(os, "sync"):
        os.sync()


def estimate_unpacked_size(archive: Path) -> int:
    """Cheap upper-bound-ish estimate of the unpacked size, to check disk space first."""
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
    return size * 3


def _check_extract_space(archive: Path, data: DataDir, reserve: int) -> None:
    ensure_free_space(data.versions_dir, estimate_unpacked_size(archive), reserve)
