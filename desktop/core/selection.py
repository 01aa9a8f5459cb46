"""Which runtime to launch: the pointer's version if usable, else last known-good, else bundled."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.errors import DesktopError, InvalidReleaseError, LaunchError
from desktop.core.manifest import RuntimeManifest, verify_version_dir
from desktop.core.state import BadVersions, Pointer, change_pointer, read_pointer

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


def staged_target(config: AppConfig, version: Version, reason: str) -> LaunchTarget:
    """A staged version, if its directory verifies (cheap check); raises InvalidReleaseError if not."""
    directory = config.data.version_dir(version)
    manifest = verify_version_dir(directory, expected=version, shell_version=config.shell_version,
                                  native_root=config.native_root)
    return LaunchTarget(version, "staged", directory, manifest, reason)


def resolve_target(config: AppConfig, *, repair: bool = True) -> LaunchTarget:
    """Apply the launch rules; with `repair`, fix a pointer that names something unusable."""
    bundled = bundled_target(config)
    pointer = read_pointer(config.data.pointer_file)
    if pointer is None:
        return bundled
    bad = BadVersions(config.data.bad_file).load()

    def usable(version: Version | None, role: str) -> LaunchTarget | str:
        if version is None:
            return f"no {role}"
        if version <= bundled.version:
            return f"{role} {version} is not newer than the bundled runtime {bundled.version}"
        if version in bad:
            return f"{role} {version} is marked bad ({bad[version].reason})"
        try:
            return staged_target(config, version, f"{role} {version}")
        except (InvalidReleaseError, OSError) as exc:
            return f"{role} {version} does not verify: {exc}"

    first = usable(pointer.version, "pointer")
    if isinstance(first, LaunchTarget):
        return first
    fallback = usable(pointer.last_known_good, "last known-good")
    if isinstance(fallback, LaunchTarget):
        log.warning("%s; falling back to last known-good %s", first, fallback.version)
        if repair:
            _repair(config, pointer, Pointer(fallback.version, known_good=True))
        return LaunchTarget(fallback.version, "staged", fallback.directory, fallback.manifest,
                            f"{first}; last known-good {fallback.version}")
    log.warning("%s; %s; using the bundled runtime", first, fallback)
    if repair:
        _repair(config, pointer, None)
    return LaunchTarget(bundled.version, "bundled", bundled.directory, bundled.manifest,
                        f"{first}; bundled runtime")


def _repair(config: AppConfig, seen: Pointer, replacement: Pointer | None) -> None:
    """Replace the pointer only if it still says what we judged (a stage may have moved it)."""
    change_pointer(config.data.pointer_file,
                   lambda now: replacement if now is not None and now.version == seen.version else now)


@dataclass(frozen=True)
class Rollback:
    from_version: Version
    to: LaunchTarget


def rollback(config: AppConfig) -> Rollback:
    """Pointer back to the previous known-good (or the bundled runtime); the version rolled
    back from is marked bad ("rolled back by user") so it is not staged again."""
    pointer = read_pointer(config.data.pointer_file)
    if pointer is None:
        raise LaunchError("nothing to roll back: the bundled runtime is in use")
    bundled = bundled_target(config)
    to = bundled
    lkg = pointer.last_known_good
    if lkg is not None and lkg > bundled.version and lkg not in BadVersions(config.data.bad_file).load():
        try:
            to = staged_target(config, lkg, f"rolled back to {lkg}")
        except (InvalidReleaseError, OSError) as exc:
            log.warning("cannot roll back to %s (%s); using the bundled runtime", lkg, exc)
    BadVersions(config.data.bad_file).mark(pointer.version, "rolled back by user")
    replacement = Pointer(to.version, known_good=True) if to.source == "staged" else None
    _repair(config, pointer, replacement)
    return Rollback(pointer.version, to)
