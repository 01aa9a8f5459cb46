"""Deltas for a new release, built from the previous releases of its channel.

Each delta is an ordinary signed target (`<release>.from-<base>.delta`, custom kind "delta")
listed in the release's custom metadata (`deltas`: base version -> target name), next to the
digest of the release's signed file manifest (`files_sha256`), against which a client checks
every file it rebuilds. A delta that does not save at least 30 % over the full archive is not
published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop.core.archive import safe_extract
from desktop.core.delta import FileManifest, build_delta, scan_manifest, should_publish
from desktop.core.delta.errors import DeltaError
from desktop.core.errors import DesktopError
from desktop.core.tree import remove_tree_quietly
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

DELTA_BASES = 3


@dataclass(frozen=True)
class BuiltDelta:
    name: str  # the target name
    path: Path  # the file, under the staging work area
    base: Version
    custom: dict[str, Any]
    length: int


def delta_name(release_name: str, base: Version) -> str:
    return f"{release_name}.from-{base}.delta"


def runtime_line(channel: str) -> Callable[[Mapping[str, Any]], bool]:
    """Runtime releases of `channel` (what a runtime delta may start from)."""
    def same(custom: Mapping[str, Any]) -> bool:
        return bool(custom.get("kind", "runtime") == "runtime" and custom.get("channel", "stable") == channel)
    return same


def previous_releases(targets: Mapping[str, Any], *, version: Version,
                      line: Callable[[Mapping[str, Any]], bool],
                      count: int = DELTA_BASES) -> list[tuple[Version, str, Any]]:
    """The newest `count` releases of `line` older than `version`: (version, name, target)."""
    found: list[tuple[Version, str, Any]] = []
    for name, target in targets.items():
        custom = target.custom or {}
        if not line(custom) or "version" not in custom:
            continue
        other = parse_version(custom.get("version"))
        if other is not None and other < version:
            found.append((other, name, target))
    found.sort(key=lambda item: item[0], reverse=True)
    return found[:count]


def build_deltas(work: Path, targets_dir: Path, runtime_dir: Path, new_manifest: FileManifest, *,
                 release_name: str, version: Version, bases: list[tuple[Version, str, Any]],
                 full_length: int) -> Iterator[BuiltDelta]:
    """Encode a delta from each base release (its published archive, extracted) to `runtime_dir`."""
    for base, name, target in bases:
        stored = targets_dir / f"{target.hashes.get('sha256')}.{name}"
        tree = work / f"base-{base}"
        try:
            old_manifest = scan_manifest(tree, known=safe_extract(stored, tree, hash_files=True))
            recorded = (target.custom or {}).get("files_sha256")
            if isinstance(recorded, str) and recorded != old_manifest.digest:
                log.warning("release %s does not match its recorded file manifest; no delta from it", base)
                continue
            out = work / delta_name(release_name, base)
            stats = build_delta(tree, old_manifest, runtime_dir, new_manifest, out,
                                base_version=str(base), target_version=str(version))
        except (DeltaError, DesktopError, OSError) as exc:
            log.warning("no delta from %s: %s", base, exc)
            continue
        finally:
            remove_tree_quietly(tree)
        if not should_publish(stats.delta_bytes, full_length):
            log.info("the delta from %s (%d bytes) saves too little over the full archive", base, stats.delta_bytes)
            out.unlink(missing_ok=True)
            continue
        yield BuiltDelta(delta_name(release_name, base), out, base, {
            "kind": "delta", "version": str(version), "base": str(base),
            "base_files_sha256": old_manifest.digest, "files_sha256": new_manifest.digest,
        }, stats.delta_bytes)
