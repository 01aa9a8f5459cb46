"""Garbage collection of old versions, stale partials, orphan records and stale downloads.

Never removed: the version any live shell runs (every lease counts), the pointer's, the last
known-good, and a partial another process is writing (gc holds the staging lock). Bad
versions go first; the newest other version is kept as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from packaging.version import Version

from desktop.core import policy
from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig
from desktop.core.launching import staged_versions, trusted_versions
from desktop.core.leases import Leases
from desktop.core.pointer import read_pointer
from desktop.core.results import GcReport
from desktop.core.stagelock import stage_lock
from desktop.core.stager import clean_partials
from desktop.core.state import fsync_dir
from desktop.core.tree import remove_tree_quietly
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)


def collect(config: AppConfig) -> GcReport:
    """Remove what no one needs; raises stager.Busy if a stage is running."""
    data = config.data
    removed: list[str] = []
    problems: list[str] = []
    with stage_lock(data.runtimes):
        gone, stuck = clean_partials(data.runtimes)
        removed += gone
        problems += [f"cannot remove {name}" for name in stuck]
        pointer = read_pointer(data.pointer_file)
        leases = Leases(data.leases_dir)
        leases.clean_stale()
        running = {lease.version for lease in leases.live()}
        protected = running | {v for v in (pointer.version if pointer else None,
                                           pointer.last_known_good if pointer else None) if v is not None}
        bad = BadVersions(data.bad_file).load()
        trusted = trusted_versions(pointer)
        staged = staged_versions(data.versions_dir)
        plan = policy.plan_gc(staged, protected=protected, is_bad=lambda v: bad.is_bad(v, trusted=trusted),
                              keep_extra=config.keep_versions)
        for version in plan.remove:
            if remove_tree_quietly(data.version_dir(version)):
                removed.append(str(version))
                with contextlib.suppress(OSError):
                    data.record_file(version).unlink()
            else:
                problems.append(f"cannot remove version {version}")
        if plan.remove:
            fsync_dir(data.versions_dir)
        kept = {str(v) for v in plan.keep}
        removed += _orphan_records(config, kept)
        newest_kept = max(plan.keep, default=None)
        removed += _stale_downloads(config, newest_kept)
        removed += _torn_temp_files(config)
    log.info("gc removed %d entries", len(removed))
    return GcReport(tuple(removed), tuple(str(v) for v in sorted(plan.keep)), tuple(problems))


def _orphan_records(config: AppConfig, kept: set[str]) -> list[str]:
    removed: list[str] = []
    try:
        names = os.listdir(config.data.records_dir)
    except OSError:
        return removed
    for name in names:
        stem = name.removesuffix(".json").removesuffix(".files")
        version = parse_version(stem) if name.endswith(".json") and not name.startswith(".") else None
        if version is None or str(version) in kept or config.data.version_dir(version).is_dir():
            continue
        with contextlib.suppress(OSError):
            (config.data.records_dir / name).unlink()
            removed.append(f"records/{name}")
    return removed


TEMP_AGE_S = 600


def _torn_temp_files(config: AppConfig) -> list[str]:
    """Temp files of atomic writes whose writer was killed (old enough that no writer is at work)."""
    removed: list[str] = []
    now = time.time()
    for directory in (config.data.root, config.data.records_dir, config.data.cache_dir):
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > TEMP_AGE_S:
                        os.unlink(entry.path)
                        removed.append(entry.name)
    return removed


def _stale_downloads(config: AppConfig, newest_kept: Version | None) -> list[str]:
    removed: list[str] = []
    try:
        names = os.listdir(config.data.downloads_dir)
    except OSError:
        return removed
    for name in names:
        version = parse_version(name.split("-", 1)[0]) if "-" in name else None
        # Partial downloads of versions newer than anything kept may still resume.
        stale = version is None or newest_kept is None or version <= newest_kept
        if stale and remove_tree_quietly(config.data.downloads_dir / name):
            removed.append(f"downloads/{name}")
    return removed
