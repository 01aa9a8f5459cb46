"""What the publisher's operations return; the CLI turns them into text or JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from desktop.core.publisher.expiry import RoleExpiry


@dataclass(frozen=True)
class Published:
    """One release added (or found already there: `unchanged`)."""

    name: str
    version: str
    channel: str
    rollout: float
    sha256: str
    length: int
    unchanged: bool
    warnings: tuple[str, ...] = ()
    deltas: tuple[tuple[str, int], ...] = ()  # (base version, bytes) of each delta published with it


@dataclass(frozen=True)
class Refreshed:
    """Metadata re-signed with new expiries; `renewed` names the roles that got a new version."""

    timestamp_version: int
    root_version: int
    renewed: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    expiry: tuple[RoleExpiry, ...] = ()


@dataclass(frozen=True)
class RootRotated:
    """A new root is live; `resigned` names the other roles re-signed for it."""

    root_version: int
    keyids: Mapping[str, tuple[str, ...]]
    thresholds: Mapping[str, int]
    resigned: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedCreated:
    root_version: int
    keyids: Mapping[str, tuple[str, ...]]
    thresholds: Mapping[str, int]


@dataclass(frozen=True)
class ExportedRoot:
    """The root written for an app release to ship."""

    path: Path
    version: int
    expires: datetime
    keyids: tuple[str, ...]
    threshold: int
    sha256: str
