"""Version parsing and ordering: anything that does not parse is ignored, never staged."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)


def parse_version(text: object) -> Version | None:
    """The version `text` names, or None (with a warning) when it is not a PEP 440 version."""
    if not isinstance(text, str) or not text or len(text) > 64:
        log.warning("ignoring invalid version %r", text)
        return None
    try:
        return Version(text)
    except InvalidVersion:
        log.warning("ignoring invalid version %r", text)
        return None


def admits(requires_shell: str | None, shell_version: str) -> bool:
    """Whether the host gate `requires_shell` admits this shell version (no gate admits all)."""
    if not requires_shell:
        return True
    try:
        spec = SpecifierSet(requires_shell)
    except InvalidSpecifier:
        return False
    return spec.contains(Version(shell_version), prereleases=True)


def newest(versions: Iterable[Version | None]) -> Version | None:
    """The greatest of the given versions, ignoring None."""
    present = [v for v in versions if v is not None]
    return max(present) if present else None


def is_upgrade(candidate: Version, current: Version | None) -> bool:
    """Whether staging `candidate` moves forward from `current` (no downgrades)."""
    return current is None or candidate > current
