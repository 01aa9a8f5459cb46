"""The next state of a feed: built from the live one, then version-bumped, signed and staged.

Versions only go up, past any orphan file a killed publisher left, so a versioned file is
never rewritten with different bytes (a CDN may have cached it). Every role is signed by
every given key that the new root (and, during a root change, the old root) trusts for it,
then checked to carry a threshold of valid signatures before it is staged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

from desktop.core.errors import UsageError
from desktop.core.publisher.expiry import DEFAULT_EXPIRY
from desktop.core.publisher.files import FeedLayout, Staging
from desktop.core.publisher.live import Document, LiveFeed
from desktop.core.publisher.signing import TOP_ROLES, check_signed, refuse_strangers, require, sign, signers_for

INDEX = "index.json"

Thresholds = int | Mapping[str, int] | None
RoleKeys = Mapping[str, Sequence[Key]] | None


def resolve_thresholds(thresholds: Thresholds, current: Root | None) -> dict[str, int]:
    """One threshold per role: a single number for all, a per-role mapping, or the current ones (else 1)."""
    if isinstance(thresholds, int):
        wanted = dict.fromkeys(TOP_ROLES, thresholds)
    else:
        unknown = set(thresholds or {}) - set(TOP_ROLES)
        if unknown:
            raise UsageError(f"unknown role {sorted(unknown)[0]!r} (roles: {', '.join(TOP_ROLES)})")
        wanted = {role: (thresholds or {}).get(role, current.roles[role].threshold if current else 1)
                  for role in TOP_ROLES}
    for role, value in wanted.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"the {role} threshold must be a whole number of at least 1")
    return wanted


def assign_keys(root: Root, assignment: Mapping[str, Sequence[Key]], thresholds: Mapping[str, int]) -> None:
    """Give each role in `assignment` exactly those keys, then set every role's threshold."""
    for role, role_keys in assignment.items():
        if role not in TOP_ROLES:
            raise UsageError(f"unknown role {role!r} (roles: {', '.join(TOP_ROLES)})")
        if not role_keys:
            raise UsageError(f"the {role} role needs at least one key")
        for old in list(root.roles[role].keyids):
            root.revoke_key(old, role)
        for key in role_keys:
            root.add_key(key, role)
    for role in TOP_ROLES:
        count = len(root.roles[role].keyids)
        if thresholds[role] > count:
            raise UsageError(f"the {role} threshold {thresholds[role]} is more than its {count} key(s)")
        root.roles[role].threshold = thresholds[role]


def describe(root: Root) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Each role's key ids and threshold."""
    return ({role: tuple(sorted(root.roles[role].keyids)) for role in TOP_ROLES},
            {role: int(root.roles[role].threshold) for role in TOP_ROLES})


def verifies(root: Root, role: str, md: Metadata[Any]) -> bool:
    return bool(root.get_verification_result(role, md.signed_bytes, md.signatures).verified)


def new_feed(layout: FeedLayout, staging: Staging, signers: Sequence[Signer], thresholds: Thresholds,
             keys: RoleKeys, now: datetime) -> LiveFeed:
    """Version 1 of every role, signed and staged (the timestamp only in memory): a new feed's base."""
    root = Root(expires=now + DEFAULT_EXPIRY[Root.type], consistent_snapshot=True)
    limits = resolve_thresholds(thresholds, None)
    assignment = dict(keys) if keys else {role: [s.public_key for s in signers] for role in TOP_ROLES}
    missing = [role for role in TOP_ROLES if role not in assignment]
    if missing:
        raise UsageError(f"a new feed needs keys for every role; none given for {', '.join(missing)}")
    assign_keys(root, assignment, limits)
    refuse_strangers([root], signers, layout.root, Targets.type)
    docs: dict[str, Document[Any]] = {}
    for role, signed in ((Root.type, root), (Targets.type, Targets(expires=now + DEFAULT_EXPIRY[Targets.type])),
                         (Snapshot.type, Snapshot(expires=now + DEFAULT_EXPIRY[Snapshot.type])),
                         (Timestamp.type, Timestamp(expires=now + DEFAULT_EXPIRY[Timestamp.type]))):
        md: Metadata[Any] = Metadata(signed)
        require(root, role, signers, layout.root)
        data = sign(md, signers_for(role, signers, root))
        check_signed(root, role, md, layout.root)
        docs[role] = Document(data, md)
        if role != Timestamp.type:
            staging.add_metadata(f"1.{role}.json", data)
            staging.add_metadata(f"{role}.json", data)
    return LiveFeed(layout, docs[Root.type], docs[Timestamp.type], docs[Snapshot.type], docs[Targets.type])


def _copy(doc: Document[Any]) -> Metadata[Any]:
    return Metadata.from_bytes(doc.raw)


@dataclass
class Draft:
    """The next state, as editable copies of the base state's metadata.

    Callers edit `root`/`targets` and name what they changed in `changed`; `stage` does the
    rest (versions, expiries, the snapshot and timestamp that point at the new files).
    """

    base: LiveFeed
    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    changed: set[str] = field(default_factory=set)
    new_targets: set[str] = field(default_factory=set)
    staged_root: bytes | None = None

    @classmethod
    def from_base(cls, base: LiveFeed) -> Draft:
        return cls(base, _copy(base.root), _copy(base.targets), _copy(base.snapshot), _copy(base.timestamp))

    @property
    def newest_root(self) -> bytes:
        """The root a fresh client bootstraps from once this state is live."""
        return self.staged_root or self.base.root.raw

    def change(self, role: str) -> None:
        """Mark `role` changed, and the roles that must point at its new version."""
        self.changed.add(role)
        if role == Targets.type:
            self.changed.add(Snapshot.type)
        if role in (Targets.type, Snapshot.type):
            self.changed.add(Timestamp.type)

    def add_target(self, name: str, length: int, sha256: str, custom: Mapping[str, Any]) -> None:
        self.targets.signed.targets[name] = TargetFile(length, {"sha256": sha256}, name,
                                                       unrecognized_fields={"custom": dict(custom)})
        self.new_targets.add(name)
        self.change(Targets.type)

    def stage_index(self, staging: Staging, layout: FeedLayout) -> None:
        """The list of release names, as a signed target clients fetch first."""
        names = sorted(path for path in self.targets.signed.targets if path != INDEX)
        data = json.dumps({"releases": names}, indent=1, sort_keys=True).encode()
        digest = hashlib.sha256(data).hexdigest()
        if not (layout.targets / f"{digest}.{INDEX}").exists():
            staging.add_target_bytes(f"{digest}.{INDEX}", data)
        self.targets.signed.targets[INDEX] = TargetFile(len(data), {"sha256": digest}, INDEX)
        self.new_targets.add(INDEX)
        self.change(Targets.type)

    def stage(self, staging: Staging, signers: Sequence[Signer], now: datetime, feed: Path, *,
              timestamp_expiry: timedelta | None = None) -> None:
        """Bump, sign and stage every changed role: root, targets, snapshot, timestamp, in that order."""
        base = self.base
        new_root = self.root.signed
        roots = (base.root.signed, new_root) if Root.type in self.changed else (new_root,)
        if Root.type in self.changed:
            new_root.version = base.root_version + 1
            new_root.expires = now + DEFAULT_EXPIRY[Root.type]
            # A new root needs a threshold of the old root's root keys and of its own.
            for trusted in roots:
                require(trusted, Root.type, signers, feed)
            data = sign(self.root, signers_for(Root.type, signers, *roots))
            for trusted in roots:
                check_signed(trusted, Root.type, self.root, feed)
            staging.add_metadata(f"{new_root.version}.root.json", data)
            staging.add_metadata("root.json", data)
            self.staged_root = data
        if Targets.type in self.changed:
            targets = self.targets.signed
            targets.version = base.next_version(Targets.type, base.targets.signed.version)
            targets.expires = now + DEFAULT_EXPIRY[Targets.type]
            self._sign(staging, Targets.type, self.targets, signers, roots, feed,
                       f"{targets.version}.targets.json", "targets.json")
            self.snapshot.signed.meta["targets.json"] = MetaFile(version=targets.version)
        if Snapshot.type in self.changed:
            snapshot = self.snapshot.signed
            snapshot.version = base.next_version(Snapshot.type, base.snapshot.signed.version)
            snapshot.expires = now + DEFAULT_EXPIRY[Snapshot.type]
            self._sign(staging, Snapshot.type, self.snapshot, signers, roots, feed,
                       f"{snapshot.version}.snapshot.json", "snapshot.json")
            self.timestamp.signed.snapshot_meta = MetaFile(version=snapshot.version)
        if Timestamp.type in self.changed:
            stamp = self.timestamp.signed
            stamp.version = base.timestamp.signed.version + 1
            stamp.expires = now + (timestamp_expiry if timestamp_expiry is not None
                                   else DEFAULT_EXPIRY[Timestamp.type])
            self._sign(staging, Timestamp.type, self.timestamp, signers, roots, feed, "timestamp.json")

    def restage_timestamp(self, staging: Staging, signers: Sequence[Signer], expires: datetime, feed: Path) -> None:
        """Re-sign the staged timestamp with another expiry (one already past, asked for on purpose)."""
        root = self.root.signed
        self.timestamp.signed.expires = expires
        data = sign(self.timestamp, signers_for(Timestamp.type, signers, root))
        check_signed(root, Timestamp.type, self.timestamp, feed)
        staging.add_metadata("timestamp.json", data)

    def _sign(self, staging: Staging, role: str, md: Metadata[Any], signers: Sequence[Signer],
              roots: Sequence[Root], feed: Path, *names: str) -> None:
        new_root = roots[-1]
        require(new_root, role, signers, feed)
        # Keys the previous root trusted sign too: a client still on that root while the new
        # one is being switched in keeps accepting the new state.
        data = sign(md, signers_for(role, signers, *roots))
        check_signed(new_root, role, md, feed)
        for name in names:
            staging.add_metadata(name, data)
