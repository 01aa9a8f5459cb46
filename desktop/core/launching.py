"""Launch targets: the bundled runtime, a staged version that verifies, and the launch rules."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from desktop.core import policy
from desktop.core.badlist import BadList, BadVersions
from desktop.core.config import AppConfig
from desktop.core.errors import DesktopError, InvalidReleaseError, LaunchError, StateError
from desktop.core.manifest import RuntimeManifest, verify_version_dir
from desktop.core.pointer import Pointer, change_pointer, read_pointer
from desktop.core.records import build_record, check_against, read_record, write_record
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchTarget:
    """A runtime that can be spawned, and why it was chosen."""

    version: Version
    source: str  # "bundled" | "staged"
    directory: Path
    manifest: RuntimeManifest
    reason: str

    @property
    def is_bundled(self) -> bool:
        return self.source == "bundled"


def bundled_target(config: AppConfig, reason: str = "bundled runtime") -> LaunchTarget:
    """The runtime shipped with the app (never marked bad)."""
    directory = config.bundled_runtime
    try:
        manifest = RuntimeManifest.load(directory)
    except DesktopError as exc:
        raise LaunchError(f"the bundled runtime is broken: {exc}") from exc
    return LaunchTarget(manifest.version, "bundled", directory, manifest, reason)


def staged_problem(config: AppConfig, version: Version, *, full: bool = False) -> str | None:
    """Why `versions/<version>` cannot be launched, or None when it verifies.

    Manifest, version, host gate and native deps as published, then the staging record:
    every file's size, and the hash of the entry and native deps (of everything with `full`).
    A version staged before records existed gets its record now, once its other checks pass.
    """
    directory = config.data.version_dir(version)
    try:
        manifest = verify_version_dir(directory, expected=version, shell_version=config.shell_version,
                                      native_root=config.native_root)
    except (InvalidReleaseError, OSError) as exc:
        return str(exc)
    record = read_record(config.data.record_file(version))
    if record is None or record.version != version:
        log.warning("version %s has no staging record; recording it now", version)
        try:
            record = build_record(version, directory, manifest.entry, manifest.native)
            write_record(config.data.record_file(version), record)
        except (OSError, StateError) as exc:
            log.warning("cannot record version %s: %s", version, exc)
        return None
    return check_against(directory, record, full=full)


def staged_target(config: AppConfig, version: Version, reason: str) -> LaunchTarget:
    """A staged version, if it verifies; raises LaunchError saying why not."""
    problem = staged_problem(config, version)
    if problem is not None:
        raise LaunchError(f"version {version} does not verify: {problem}")
    directory = config.data.version_dir(version)
    return LaunchTarget(version, "staged", directory, RuntimeManifest.load(directory), reason)


def trusted_versions(pointer: Pointer | None) -> tuple[Version, ...]:
    """Versions that stay launchable even when the bad list is unreadable: the last known-good."""
    if pointer is None:
        return ()
    good = [pointer.last_known_good] if pointer.last_known_good else []
    if pointer.known_good:
        good.append(pointer.version)
    return tuple(good)


def staged_versions(versions_dir: Path) -> list[Version]:
    """Complete version directories (named exactly by their normalized version)."""
    found: list[Version] = []
    try:
        names = os.listdir(versions_dir)
    except OSError:
        return found
    for name in names:
        if name.startswith(".") or not name[:1].isdigit():
            continue
        version = parse_version(name)
        if version is not None and str(version) == name and (versions_dir / name).is_dir():
            found.append(version)
    return found


def load_bad(config: AppConfig, pointer: Pointer | None, *, repair: bool = True) -> BadList:
    """The bad list; if it (and its backup) became unreadable, every staged version that is not the
    last known-good is marked bad to be safe and the list is written anew (with `repair`)."""
    bad = BadVersions(config.data.bad_file)
    current = bad.load()
    if not current.unknown or not repair:
        return current
    trusted = trusted_versions(pointer)
    suspects = [v for v in staged_versions(config.data.versions_dir) if v not in trusted]
    log.warning("the bad-version list is unreadable; marking %s bad to be safe",
                ", ".join(map(str, suspects)) or "nothing")
    try:
        return bad.reset_unknown(suspects)
    except StateError as exc:
        log.warning("cannot rewrite the bad-version list: %s", exc)
        return current


def resolve(config: AppConfig, *, repair: bool = True, bad: BadList | None = None) -> LaunchTarget:
    """Apply the launch rules; with `repair`, fix a pointer that names something unusable."""
    bundled = bundled_target(config)
    pointer = read_pointer(config.data.pointer_file)
    bad = bad if bad is not None else load_bad(config, pointer, repair=repair)
    trusted = trusted_versions(pointer)
    choice = policy.choose_launch(pointer, bundled=bundled.version,
                                  is_bad=lambda v: bad.is_bad(v, trusted=trusted),
                                  problem=lambda v: staged_problem(config, v))
    if choice.repair and pointer is not None:
        log.warning("%s", choice.reason)
        if repair:
            try:
                move = choice.repaired
                change_pointer(config.data.pointer_file,
                               lambda now: move if now is not None and now.version == pointer.version else now)
            except StateError as exc:
                log.warning("cannot repair the pointer: %s", exc)
    if choice.version is None:
        return LaunchTarget(bundled.version, "bundled", bundled.directory, bundled.manifest, choice.reason)
    directory = config.data.version_dir(choice.version)
    return LaunchTarget(choice.version, "staged", directory, RuntimeManifest.load(directory), choice.reason)
