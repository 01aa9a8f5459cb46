"""How long each role of a feed stays valid, and when someone must act.

Root and targets are signed for a year, snapshot for a month, timestamp for a week.
`refresh` always renews snapshot and timestamp, and renews root and targets once they are
within `RENEW_WINDOW` of expiring (each needs its own key). `needs_key` marks a role that
expires within its warning window: someone holding that role's key has to run a refresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tuf.api.metadata import Root, Snapshot, Targets, Timestamp

from desktop.core.publisher.live import LiveFeed

DEFAULT_EXPIRY = {
    Root.type: timedelta(days=365),
    Targets.type: timedelta(days=365),
    Snapshot.type: timedelta(days=30),
    Timestamp.type: timedelta(days=7),
}
RENEW_WINDOW = timedelta(days=30)
# Snapshot and timestamp are renewed by every refresh: warn only when that has stopped
# happening (a cron job that no longer runs).
WARN_WITHIN = {
    Root.type: RENEW_WINDOW,
    Targets.type: RENEW_WINDOW,
    Snapshot.type: timedelta(days=7),
    Timestamp.type: timedelta(days=2),
}
_DAY = 86400.0


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RoleExpiry:
    """One role's expiry; unpacks as `(role, expires, days_left, needs_key)`."""

    role: str
    version: int
    expires: datetime
    days_left: float
    needs_key: bool
    keyids: tuple[str, ...]
    threshold: int

    def __iter__(self) -> Iterator[object]:
        return iter((self.role, self.expires, self.days_left, self.needs_key))

    @property
    def expired(self) -> bool:
        return self.days_left <= 0

    def warning(self) -> str | None:
        """The loud line to show, or None when nothing needs doing yet."""
        if not self.needs_key:
            return None
        when = self.expires.strftime("%Y-%m-%d %H:%M UTC")
        keys = "the root key(s)" if self.role == Root.type else f"the {self.role} key(s)"
        action = f"run `desktop publish --refresh --feed DIR` with {keys}"
        if self.expired:
            return (f"WARNING: the feed's {self.role} metadata EXPIRED on {when}: every install has stopped "
                    f"updating; {action}")
        return (f"WARNING: the feed's {self.role} metadata expires in {self.days_left:.0f} days ({when}); "
                f"installs stop updating then; {action}")


def report(live: LiveFeed, now: datetime, window: timedelta | None = None) -> list[RoleExpiry]:
    """Every top-level role's expiry at `now`, root first."""
    root = live.root.signed
    entries: list[RoleExpiry] = []
    for role, signed in ((Root.type, live.root.signed), (Targets.type, live.targets.signed),
                         (Snapshot.type, live.snapshot.signed), (Timestamp.type, live.timestamp.signed)):
        left = (signed.expires - now).total_seconds() / _DAY
        warn = WARN_WITHIN[role] if window is None or role in (Snapshot.type, Timestamp.type) else window
        entries.append(RoleExpiry(role, int(signed.version), signed.expires, left,
                                  left * _DAY <= warn.total_seconds(), tuple(sorted(root.roles[role].keyids)),
                                  int(root.roles[role].threshold)))
    return entries


def within(live_expires: datetime, now: datetime, window: timedelta) -> bool:
    return live_expires - now <= window
