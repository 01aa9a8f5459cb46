"""Garbage collection of old versions, stale partials and stale downloads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.stager import clean_partials, remove_tree, stage_lock
from desktop.core.state import fsync_dir, read_json_object, read_pointer
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcResult:
    removed: tuple[str, ...]
    kept: tuple[str, ...]


def running_info(config: AppConfig) -> dict[str, Any] | None:
    """running.json, if the shell process that wrote it is still alive."""
    info = read_json_object(config.data.running_file) or {}
    pid = info.get("shell_pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info


def running_version(config: AppConfig) -> Version | None:
    """The staged version a live shell process is running right now, if any."""
    info = running_info(config)
    return parse_version(info.get("version")) if info else None


def collect(config: AppConfig) -> GcResult:
    """Keep the pointer's version, the last known-good, the running one and `keep_versions`
    others (newest first); remove everything else. Raises stager.Busy if a stage is running."""
    data = config.data
    removed: list[str] = []
    with stage_lock(data):
        removed += [p.name for p in clean_partials(data)]
        pointer = read_pointer(data.pointer_file)
        protected = {v for v in (
            pointer.version if pointer else None,
            pointer.last_known_good if pointer else None,
            running_version(config),
        ) if v is not None}
        staged: list[Version] = []
        if data.versions_dir.is_dir():
            for child in data.versions_dir.iterdir():
                version = parse_version(child.name) if child.is_dir() else None
                if version is None or str(version) != child.name:
                    continue
                staged.append(version)
        others = sorted((v for v in staged if v not in protected), reverse=True)
        keep = protected | set(others[: max(config.keep_versions, 0)])
        for version in staged:
            if version not in keep:
                remove_tree(data.version_dir(version))
                removed.append(str(version))
        if removed:
            fsync_dir(data.versions_dir)
        newest_kept = max(keep, default=None)
        if data.downloads_dir.is_dir():
            for leftover in data.downloads_dir.iterdir():
                version = parse_version(leftover.name.split("-", 1)[0])
                # Partial downloads of versions newer than anything kept may still resume.
                if version is None or newest_kept is None or version <= newest_kept:
                    leftover.unlink(missing_ok=True)
                    removed.append(f"downloads/{leftover.name}")
    log.info("gc removed %d entries", len(removed))
    return GcResult(tuple(removed), tuple(str(v) for v in sorted(keep)))
