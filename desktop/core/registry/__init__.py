"""Registry clients: where releases come from (an npm-protocol registry or a TUF feed).

Clients only fetch and verify; which release to take is decided by desktop.core.policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from packaging.version import Version

from desktop.core.digests import Integrity

DownloadProgress = Callable[[int, int | None], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True)
class Release:
    """One published runtime version a registry offers."""

    version: Version
    url: str
    integrity: Integrity | None
    size: int | None = None
    channel: str = "latest"
    requires_shell: str | None = None
    notes: str = ""
    rollout: float = 100.0
    published: str = ""
    unpacked_size: int | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def artefact_key(self) -> str:
        """Identity of the published bytes: a different digest is a different artefact."""
        return self.integrity.sri if self.integrity else self.url


@dataclass(frozen=True)
class DeltaOffer:
    """A signed delta that rebuilds a release from a base version the client may have."""

    base: Version
    name: str
    length: int
    base_files_sha256: str  # the base release's signed file manifest digest
    files_sha256: str  # the target release's signed file manifest digest


@dataclass(frozen=True)
class Listing:
    """What one check of a registry returned."""

    releases: tuple[Release, ...]
    not_modified: bool = False
    bytes_received: int = 0


class Registry(Protocol):
    """The narrow interface the updater needs from any registry."""

    def list_releases(self, channel: str) -> Listing:
        """Releases offered for `channel` (a conditional request where possible)."""

    def download(self, release: Release, dest: Path, *, progress: DownloadProgress | None = None,
                 cancel: Cancel | None = None) -> int:
        """Fetch the release archive into `dest`, verified; returns the bytes received."""

    def close(self) -> None:
        """Release network resources."""


@runtime_checkable
class DeltaSource(Protocol):
    """A registry that can rebuild releases from deltas (the feed)."""

    def delta_offers(self, release: Release) -> list[DeltaOffer]:
        """The signed deltas that rebuild `release`, newest base first."""

    def download_delta(self, offer: DeltaOffer, dest: Path, *, progress: DownloadProgress | None = None,
                       cancel: Cancel | None = None) -> int:
        """Fetch the delta into `dest`, verified against its signed length and digest."""
