"""Read-only views of a feed for the release tooling: expiry, status, the root to ship."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from desktop.core.publisher import expiry
from desktop.core.publisher.draft import INDEX
from desktop.core.publisher.errors import FeedStateError
from desktop.core.publisher.expiry import RoleExpiry
from desktop.core.publisher.files import FeedLayout
from desktop.core.publisher.live import LiveFeed, load_live
from desktop.core.publisher.repository import FeedPublisher
from desktop.core.publisher.results import ExportedRoot


@dataclass(frozen=True)
class FeedStatus:
    """What `desktop status --feed DIR` shows: versions, each role's keys and expiry, the releases."""

    feed: Path
    root_version: int
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    expiry: tuple[RoleExpiry, ...]
    releases: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]


def _live(feed_dir: Path) -> LiveFeed:
    live = load_live(FeedLayout(Path(feed_dir)))
    if live is None:
        raise FeedStateError(f"{feed_dir} holds no feed")
    return live


def expiry_report(feed_dir: Path, *, now: datetime | None = None,
                  window: timedelta | None = None) -> list[RoleExpiry]:
    """Each role's expiry in the feed at `feed_dir`: root, targets, snapshot, timestamp."""
    return expiry.report(_live(feed_dir), now or expiry.now_utc(), window)


def feed_status(feed_dir: Path, *, now: datetime | None = None, window: timedelta | None = None) -> FeedStatus:
    """The live state of the feed at `feed_dir` and the warnings a publisher must act on."""
    live = _live(feed_dir)
    report = tuple(expiry.report(live, now or expiry.now_utc(), window))
    releases = tuple({"name": path, "length": t.length, **(t.custom or {})}
                     for path, t in sorted(live.targets.signed.targets.items()) if path != INDEX)
    return FeedStatus(Path(feed_dir), live.root_version, int(live.targets.signed.version),
                      int(live.snapshot.signed.version), int(live.timestamp.signed.version), report, releases,
                      tuple(w for w in (e.warning() for e in report) if w))


def export_root(feed_dir: Path, out_file: Path) -> ExportedRoot:
    """Write the feed's current trusted root.json (its chain checked) to `out_file` for an app to ship."""
    return FeedPublisher(Path(feed_dir)).export_root(Path(out_file))
