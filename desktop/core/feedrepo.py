"""The publisher's earlier single-key interface, kept for its callers; see `desktop.core.publisher`.

`FeedRepository(root).publish(dir, signer, ...)`, `.refresh(signer)` and
`.rotate_root(old, new)` behave as before, except that every call is now checked before it
writes (an unauthorised key raises `KeyNotAuthorisedError` and changes nothing) and the
feed is world-readable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from desktop.core.publisher import FORMATS, INDEX, FeedPublisher, Published
from desktop.core.publisher.expiry import DEFAULT_EXPIRY

__all__ = ["DEFAULT_EXPIRY", "FORMATS", "INDEX", "FeedRepository", "Published"]


class FeedRepository:
    """A TUF repository in a directory, signed with one key per call."""

    def __init__(self, root: Path) -> None:
        self.publisher = FeedPublisher(root)
        self.root = self.publisher.layout.root
        self.metadata_dir = self.publisher.layout.metadata
        self.targets_dir = self.publisher.layout.targets

    def exists(self) -> bool:
        return self.publisher.exists()

    def initialize(self, signer: Signer) -> None:
        self.publisher.create([signer])

    def publish(self, runtime_dir: Path, signer: Signer, *, channel: str = "stable", rollout: float = 100.0,
                notes: str = "", fmt: str = "tar.gz", published_at: str | None = None) -> Published:
        return self.publisher.publish(runtime_dir, [signer], channel=channel, rollout=rollout, notes=notes,
                                      fmt=fmt, published_at=published_at)

    def refresh(self, signer: Signer, *, timestamp_expiry: timedelta | None = None) -> int:
        """Re-sign snapshot and timestamp (and root/targets near expiry); the new timestamp version."""
        return self.publisher.refresh([signer], timestamp_expiry=timestamp_expiry).timestamp_version

    def rotate_root(self, old: Signer, new: Signer) -> int:
        """Root N+1 hands every role to `new`; the new root version."""
        return self.publisher.rotate_root([old], [new]).root_version

    def releases(self) -> list[dict[str, Any]]:
        return self.publisher.releases()
