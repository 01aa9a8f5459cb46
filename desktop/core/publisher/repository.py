"""`FeedPublisher`: publish, refresh, rotate and export a TUF feed, each checked before it goes live.

Every operation runs under the feed's lock and follows one path: read the live state,
refuse keys the current root does not trust for the roles being signed, build and sign the
next state into a staging directory, read it with the real `tuf.ngclient` as the clients
that exist would (one that trusted the previous root and kept its metadata, a fresh one
bootstrapped from the new root, one that starts from `1.root.json`), and only then switch it
in (see `files.py` for the order). Any failure before the switch leaves the live feed as it
was, byte for byte.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

from desktop.core import pack
from desktop.core.errors import UsageError
from desktop.core.manifest import validate_package
from desktop.core.publisher import expiry
from desktop.core.publisher.errors import (
    ExpiredRoleError,
    FeedStateError,
    NoSigningKeyError,
    PublishError,
)
from desktop.core.publisher.expiry import DEFAULT_EXPIRY, RENEW_WINDOW, RoleExpiry
from desktop.core.publisher.files import (
    Checkpoint,
    FeedLayout,
    Staging,
    feed_lock,
    make_public_dir,
    remove_stale_staging,
    sha256_file,
)
from desktop.core.publisher.live import Document, LiveFeed, load_live
from desktop.core.publisher.signing import (
    TOP_ROLES,
    check_signed,
    refuse_strangers,
    require,
    sign,
    signers_for,
    trusted_for,
    unique,
)
from desktop.core.publisher.verify import Client, ClientCache, check_as

INDEX = "index.json"
FORMATS: tuple[str, ...] = tuple(pack.FORMATS)

Clock = Callable[[], datetime]
Signers = Signer | Sequence[Signer]
Thresholds = int | Mapping[str, int] | None
RoleKeys = Mapping[str, Sequence[Key]] | None


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    channel: str
    rollout: float
    sha256: str
    length: int
    unchanged: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refreshed:
    timestamp_version: int
    root_version: int
    renewed: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    expiry: tuple[RoleExpiry, ...] = ()


@dataclass(frozen=True)
class RootRotated:
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
    path: Path
    version: int
    expires: datetime
    keyids: tuple[str, ...]
    threshold: int
    sha256: str


@dataclass
class _Next:
    """The next state, built from a base state; `_stage_next` bumps versions, signs and stages it."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    changed: set[str] = field(default_factory=set)
    new_targets: set[str] = field(default_factory=set)
    staged_root: bytes | None = None


def _signer_list(signers: Signers | None) -> list[Signer]:
    if signers is None:
        return []
    if isinstance(signers, Signer):
        return [signers]
    return unique(signers)


def _copy(doc: Document[Any]) -> Metadata[Any]:
    return Metadata.from_bytes(doc.raw)


def _resolve_thresholds(thresholds: Thresholds, current: Root | None) -> dict[str, int]:
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


def _assign_keys(root: Root, assignment: Mapping[str, Sequence[Key]], thresholds: Mapping[str, int]) -> None:
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


def _describe(root: Root) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    return ({role: tuple(sorted(root.roles[role].keyids)) for role in TOP_ROLES},
            {role: int(root.roles[role].threshold) for role in TOP_ROLES})


def _verifies(root: Root, role: str, md: Metadata[Any]) -> bool:
    return bool(root.get_verification_result(role, md.signed_bytes, md.signatures).verified)


def _no_checkpoint(step: str) -> None:
    return None


class FeedPublisher:
    """A TUF feed in a directory, written only through verified, atomic switches.

    `clock` gives the time metadata is signed at (inject it to test expiry); `lock_timeout`
    is how long to wait for another publisher (0: fail at once with `FeedBusyError`);
    `checkpoint(step)` is called at each named step ("locked", "staged", "verified",
    "replace <path>", "committed") so tests can inject a failure or a kill there.
    """

    def __init__(self, root: Path, *, clock: Clock | None = None, lock_timeout: float = 0.0,
                 checkpoint: Checkpoint | None = None) -> None:
        self.layout = FeedLayout(Path(root))
        self.clock: Clock = clock or expiry.now_utc
        self.lock_timeout = lock_timeout
        self.checkpoint: Checkpoint = checkpoint or _no_checkpoint

    @property
    def root(self) -> Path:
        return self.layout.root

    def exists(self) -> bool:
        from desktop.core.publisher.live import feed_exists

        return feed_exists(self.layout)

    # -- operations -----------------------------------------------------------------------
    def create(self, signers: Signers, *, thresholds: Thresholds = None, keys: RoleKeys = None) -> FeedCreated:
        """A new feed: root, targets, snapshot and timestamp v1.

        Every role is held by every signer's key unless `keys` maps roles to public keys;
        `thresholds` is one number for every role or a per-role mapping (default 1).
        """
        given = _signer_list(signers)
        if not given:
            raise NoSigningKeyError(self._no_key_message(new=True))
        if self.exists():
            raise UsageError(f"{self.root} already holds a feed")
        with self._session(create=True) as staging:
            if load_live(self.layout) is not None:
                raise UsageError(f"{self.root} already holds a feed")
            base = self._new_feed_base(staging, given, thresholds, keys)
            staging.add_metadata("timestamp.json", base.timestamp.raw)
            self._verify_and_commit(staging, None, base.root.raw, {})
            ids, limits = _describe(base.root.signed)
            return FeedCreated(1, ids, limits)

    def publish(self, runtime_dir: Path, signers: Signers, *, channel: str = "stable", rollout: float = 100.0,
                notes: str = "", fmt: str = "tar.gz", published_at: str | None = None,
                thresholds: Thresholds = None, keys: RoleKeys = None,
                window: timedelta = RENEW_WINDOW) -> Published:
        """Validate, pack reproducibly and add one runtime version (creating the feed if needed).

        Needs the targets, snapshot and timestamp keys; also renews root when it expires within
        `window` and a threshold of root keys was given. `thresholds`/`keys` apply only when
        the feed is created. The same version with different bytes is refused (`UsageError`);
        the same bytes with new facts (a wider rollout) re-sign them.
        """
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        if not 0 <= rollout <= 100:
            raise UsageError("rollout must be a percentage between 0 and 100")
        given = _signer_list(signers)
        manifest = validate_package(runtime_dir)
        if not given:
            raise NoSigningKeyError(self._no_key_message(new=not self.exists()))
        with self._session(create=True) as staging:
            live = load_live(self.layout)
            base = live or self._new_feed_base(staging, given, thresholds, keys)
            root = base.root.signed
            refuse_strangers([root], given, self.root, Targets.type)
            for role in (Targets.type, Snapshot.type, Timestamp.type):
                require(root, role, given, self.root)
            self.checkpoint("authorised")
            name = f"{manifest.name}-{manifest.version}.{fmt}"
            archive = staging.work / name
            pack.pack_directory(runtime_dir, archive, fmt)
            sha256, length = sha256_file(archive)
            nxt = self._next_from(base)
            targets = nxt.targets.signed
            for path, other in targets.targets.items():
                if (path != INDEX and str((other.custom or {}).get("version")) == str(manifest.version)
                        and other.hashes.get("sha256") != sha256):
                    raise UsageError(f"version {manifest.version} is already published as {path} "
                                     "with different bytes; publish a new version instead")
            custom: dict[str, Any] = {
                "version": str(manifest.version),
                "channel": channel,
                "requires_shell": manifest.requires_shell,
                # Canonical JSON (what TUF signs) has no floats.
                "rollout": int(rollout) if float(rollout).is_integer() else f"{rollout:g}",
                "notes": notes,
                "published": published_at or self.clock().isoformat(),
            }
            previous = targets.targets.get(name)
            if previous is not None and previous.hashes.get("sha256") == sha256:
                old = dict(previous.custom or {})
                custom["published"] = old.get("published", custom["published"])
                if live is not None and old == custom:
                    return Published(name, str(manifest.version), channel, rollout, sha256, length, True,
                                     tuple(self._warnings(live, window)))
            stored = f"{sha256}.{name}"
            if not (self.layout.targets / stored).exists():
                staging.add_target_file(archive, stored)
            nxt.new_targets.add(name)
            targets.targets[name] = TargetFile(length, {"sha256": sha256}, name, unrecognized_fields={"custom": custom})
            self._stage_index(staging, nxt)
            nxt.changed.update((Targets.type, Snapshot.type, Timestamp.type))
            self._renew_in_window(base, nxt, given, window, roles=(Root.type,), explicit=())
            self._stage_next(staging, base, nxt, given)
            warnings = self._verify_and_commit(staging, live, nxt.staged_root or base.root.raw,
                                               dict(targets.targets), nxt.new_targets)
            warnings += self._warnings(self._require_live(), window)
            return Published(name, str(manifest.version), channel, rollout, sha256, length, False, tuple(warnings))

    def refresh(self, signers: Signers, *, window: timedelta = RENEW_WINDOW, renew: Sequence[str] = (),
                timestamp_expiry: timedelta | None = None) -> Refreshed:
        """Re-sign snapshot and timestamp, and every other role that expires within `window`.

        Root and targets are renewed only with a threshold of their own keys; without them a
        role still valid is left as is and named in `warnings`, a role already expired is
        refused (`ExpiredRoleError`). `renew` forces roles regardless of the window.
        `timestamp_expiry` overrides the timestamp's validity; a value <= 0 signs an already
        expired timestamp (for testing clients; the client check then skips its freshness).
        """
        given = _signer_list(signers)
        if not given:
            raise NoSigningKeyError(self._no_key_message(new=not self.exists()))
        for role in renew:
            if role not in TOP_ROLES:
                raise UsageError(f"unknown role {role!r} (roles: {', '.join(TOP_ROLES)})")
        with self._session(create=False) as staging:
            live = self._require_live()
            root = live.root.signed
            refuse_strangers([root], given, self.root, Snapshot.type)
            for role in (Snapshot.type, Timestamp.type):
                require(root, role, given, self.root)
            self.checkpoint("authorised")
            nxt = self._next_from(live)
            nxt.changed.update((Snapshot.type, Timestamp.type))
            self._renew_in_window(live, nxt, given, window, roles=(Root.type, Targets.type), explicit=tuple(renew))
            expired_on_purpose = timestamp_expiry is not None and timestamp_expiry <= timedelta(0)
            self._stage_next(staging, live, nxt, given,
                             timestamp_expiry=None if expired_on_purpose else timestamp_expiry)

            def expire_timestamp() -> None:
                assert timestamp_expiry is not None
                self._restage_timestamp(staging, nxt, given, self.clock() + timestamp_expiry)

            warnings = self._verify_and_commit(
                staging, live, nxt.staged_root or live.root.raw, dict(nxt.targets.signed.targets), set(),
                before_commit=expire_timestamp if expired_on_purpose else None)
            after = self._require_live()
            report = expiry.report(after, self.clock(), window)
            warnings += [w for w in (e.warning() for e in report) if w]
            renewed = tuple(role for role in TOP_ROLES if role in nxt.changed)
            return Refreshed(int(after.timestamp.signed.version), after.root_version, renewed,
                             tuple(dict.fromkeys(warnings)), tuple(report))

    def rotate_root(self, old_signers: Signers, new_signers: Signers, *, thresholds: Thresholds = None,
                    keys: RoleKeys = None) -> RootRotated:
        """Root N+1, signed by a threshold of root N's root keys and of its own.

        By default every role goes to the new signers' keys; `keys` maps only the roles to
        change to their new public keys. Thresholds default to the current ones. Targets,
        snapshot and timestamp are re-signed only if they no longer verify under the new
        root, by the new keys (and by the old ones given, so a client still on root N
        accepts them while root N+1 is switched in).
        """
        old = _signer_list(old_signers)
        new = _signer_list(new_signers)
        if not old:
            raise NoSigningKeyError(f"rotating the root of {self.root} needs its current root key(s) (--key FILE)")
        if not new:
            raise NoSigningKeyError(f"rotating the root of {self.root} needs the new key(s)")
        with self._session(create=False) as staging:
            live = self._require_live()
            current = live.root.signed
            refuse_strangers([current], old, self.root, Root.type)
            require(current, Root.type, old, self.root)
            nxt = self._next_from(live)
            limits = _resolve_thresholds(thresholds, current)
            assignment = dict(keys) if keys else {role: [s.public_key for s in new] for role in TOP_ROLES}
            _assign_keys(nxt.root.signed, assignment, limits)
            refuse_strangers([nxt.root.signed], new, self.root, Root.type)
            self.checkpoint("authorised")
            nxt.changed.add(Root.type)
            future = nxt.root.signed
            if not _verifies(future, Targets.type, live.targets.md):
                nxt.changed.add(Targets.type)
            if Targets.type in nxt.changed or not _verifies(future, Snapshot.type, live.snapshot.md):
                nxt.changed.add(Snapshot.type)
            if Snapshot.type in nxt.changed or not _verifies(future, Timestamp.type, live.timestamp.md):
                nxt.changed.add(Timestamp.type)
            self._stage_next(staging, live, nxt, [*old, *new])
            warnings = self._verify_and_commit(staging, live, nxt.staged_root or live.root.raw,
                                               dict(nxt.targets.signed.targets), set())
            ids, thresholds_now = _describe(future)
            return RootRotated(int(future.version), ids, thresholds_now,
                               tuple(r for r in TOP_ROLES if r in nxt.changed and r != Root.type), tuple(warnings))

    def expiry_report(self, *, window: timedelta | None = None) -> list[RoleExpiry]:
        """Each role's expiry at the publisher's clock, root first."""
        return expiry.report(self._require_live(), self.clock(), window)

    def export_root(self, out: Path) -> ExportedRoot:
        """Write the feed's newest root, after checking its chain from 1.root.json, for an app to ship."""
        from desktop.core.publisher.files import replace_public_file
        from desktop.core.publisher.live import verified_root_chain

        root = verified_root_chain(self.layout)
        try:
            replace_public_file(Path(out), root.raw)
        except OSError as exc:
            raise PublishError(f"cannot write {out}: {exc.strerror or exc}") from None
        import hashlib

        role = root.signed.roles[Root.type]
        return ExportedRoot(Path(out), int(root.signed.version), root.signed.expires, tuple(sorted(role.keyids)),
                            int(role.threshold), hashlib.sha256(root.raw).hexdigest())

    def releases(self) -> list[dict[str, Any]]:
        live = self._require_live()
        return [{"name": path, "length": t.length, **(t.custom or {})}
                for path, t in sorted(live.targets.signed.targets.items()) if path != INDEX]

    # -- mechanics ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, *, create: bool) -> Iterator[Staging]:
        if not self.layout.root.is_dir():
            if not create:
                raise FeedStateError(f"{self.root} holds no feed; publish something first")
            make_public_dir(self.layout.root)
        with feed_lock(self.layout, self.lock_timeout):
            self.checkpoint("locked")
            remove_stale_staging(self.layout)
            staging = Staging(self.layout)
            try:
                yield staging
            finally:
                staging.discard()

    def _require_live(self) -> LiveFeed:
        live = load_live(self.layout)
        if live is None:
            raise FeedStateError(f"{self.root} holds no feed; publish something first")
        return live

    def _no_key_message(self, *, new: bool) -> str:
        if new:
            return (f"creating the feed {self.root} needs a signing key: create one with "
                    "`desktop keygen --out FILE` and pass --key FILE")
        return (f"{self.root} is an existing feed: pass the key(s) its root trusts with --key FILE "
                "(a key is never generated for an existing feed)")

    def _new_feed_base(self, staging: Staging, signers: list[Signer], thresholds: Thresholds,
                       keys: RoleKeys) -> LiveFeed:
        """Version 1 of every role, staged (timestamp kept in memory): the base of a new feed."""
        now = self.clock()
        root = Root(expires=now + DEFAULT_EXPIRY[Root.type], consistent_snapshot=True)
        limits = _resolve_thresholds(thresholds, None)
        assignment = dict(keys) if keys else {role: [s.public_key for s in signers] for role in TOP_ROLES}
        missing = [role for role in TOP_ROLES if role not in assignment]
        if missing:
            raise UsageError(f"a new feed needs keys for every role; none given for {', '.join(missing)}")
        _assign_keys(root, assignment, limits)
        refuse_strangers([root], signers, self.root, Targets.type)
        docs: dict[str, Document[Any]] = {}
        for role, signed in ((Root.type, root), (Targets.type, Targets(expires=now + DEFAULT_EXPIRY[Targets.type])),
                             (Snapshot.type, Snapshot(expires=now + DEFAULT_EXPIRY[Snapshot.type])),
                             (Timestamp.type, Timestamp(expires=now + DEFAULT_EXPIRY[Timestamp.type]))):
            md: Metadata[Any] = Metadata(signed)
            require(root, role, signers, self.root)
            data = sign(md, signers_for(role, signers, root))
            check_signed(root, role, md, self.root)
            docs[role] = Document(data, md)
            if role != Timestamp.type:
                staging.add_metadata(f"1.{role}.json", data)
                staging.add_metadata(f"{role}.json", data)
        return LiveFeed(self.layout, docs[Root.type], docs[Timestamp.type], docs[Snapshot.type], docs[Targets.type])

    def _next_from(self, base: LiveFeed) -> _Next:
        return _Next(_copy(base.root), _copy(base.targets), _copy(base.snapshot), _copy(base.timestamp))

    def _stage_index(self, staging: Staging, nxt: _Next) -> None:
        names = sorted(path for path in nxt.targets.signed.targets if path != INDEX)
        data = json.dumps({"releases": names}, indent=1, sort_keys=True).encode()
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        if not (self.layout.targets / f"{digest}.{INDEX}").exists():
            staging.add_target_bytes(f"{digest}.{INDEX}", data)
        nxt.targets.signed.targets[INDEX] = TargetFile(len(data), {"sha256": digest}, INDEX)
        nxt.new_targets.add(INDEX)

    def _renew_in_window(self, base: LiveFeed, nxt: _Next, signers: list[Signer], window: timedelta,
                         roles: Sequence[str], explicit: Sequence[str]) -> None:
        """Mark for renewal each of `roles` expiring within `window` whose keys were given.

        A role left alone shows up in the expiry report afterwards (the caller's warnings);
        one that has already expired cannot be left alone: the feed would stay dead.
        """
        now = self.clock()
        root = base.root.signed
        current = {Root.type: base.root.signed, Targets.type: base.targets.signed}
        for role in roles:
            signed = current[role]
            if role in nxt.changed:
                continue
            if role not in explicit and signed.expires - now > window:
                continue
            if len(trusted_for(root, role, signers)) >= root.roles[role].threshold:
                nxt.changed.add(role)
                if role == Targets.type:
                    nxt.changed.add(Snapshot.type)
                continue
            if role in explicit:
                require(root, role, signers, self.root)
            when = signed.expires.strftime("%Y-%m-%d %H:%M UTC")
            if signed.expires <= now:
                raise ExpiredRoleError(f"the {role} metadata of {self.root} expired on {when}; renewing it needs "
                                       f"the {role} key(s), which were not given (--key FILE)")

    def _stage_next(self, staging: Staging, base: LiveFeed, nxt: _Next, signers: list[Signer], *,
                    timestamp_expiry: timedelta | None = None) -> None:
        """Bump, sign and stage every changed role (root, targets, snapshot, timestamp in that order)."""
        now = self.clock()
        feed = self.root
        old_root = base.root.signed
        new_root = nxt.root.signed
        roots = (new_root,) if Root.type not in nxt.changed else (old_root, new_root)
        if Root.type in nxt.changed:
            new_root.version = base.root_version + 1
            new_root.expires = now + DEFAULT_EXPIRY[Root.type]
            for trusted in roots:
                require(trusted, Root.type, signers, feed)
            data = sign(nxt.root, signers_for(Root.type, signers, *roots))
            for trusted in roots:
                check_signed(trusted, Root.type, nxt.root, feed)
            staging.add_metadata(f"{new_root.version}.root.json", data)
            staging.add_metadata("root.json", data)
            nxt.staged_root = data
        if Targets.type in nxt.changed:
            targets = nxt.targets.signed
            targets.version = base.next_version(Targets.type, base.targets.signed.version)
            targets.expires = now + DEFAULT_EXPIRY[Targets.type]
            self._sign_role(staging, Targets.type, nxt.targets, signers, new_root, roots,
                            f"{targets.version}.targets.json", "targets.json")
            nxt.snapshot.signed.meta["targets.json"] = MetaFile(version=targets.version)
        if Snapshot.type in nxt.changed:
            snapshot = nxt.snapshot.signed
            snapshot.version = base.next_version(Snapshot.type, base.snapshot.signed.version)
            snapshot.expires = now + DEFAULT_EXPIRY[Snapshot.type]
            self._sign_role(staging, Snapshot.type, nxt.snapshot, signers, new_root, roots,
                            f"{snapshot.version}.snapshot.json", "snapshot.json")
            nxt.timestamp.signed.snapshot_meta = MetaFile(version=snapshot.version)
        if Timestamp.type in nxt.changed:
            stamp = nxt.timestamp.signed
            stamp.version = base.timestamp.signed.version + 1
            stamp.expires = now + (timestamp_expiry if timestamp_expiry is not None
                                   else DEFAULT_EXPIRY[Timestamp.type])
            self._sign_role(staging, Timestamp.type, nxt.timestamp, signers, new_root, roots, "timestamp.json")
        self.checkpoint("staged")

    def _sign_role(self, staging: Staging, role: str, md: Metadata[Any], signers: list[Signer], new_root: Root,
                   roots: Sequence[Root], *names: str) -> None:
        require(new_root, role, signers, self.root)
        # Keys the previous root trusted sign too: a client still on that root during the
        # switch to a new one keeps accepting the new state.
        data = sign(md, signers_for(role, signers, *roots))
        check_signed(new_root, role, md, self.root)
        for name in names:
            staging.add_metadata(name, data)

    def _restage_timestamp(self, staging: Staging, nxt: _Next, signers: list[Signer], expires: datetime) -> None:
        """Re-sign the verified timestamp with an expiry the caller asked for (already past)."""
        root = nxt.root.signed
        nxt.timestamp.signed.expires = expires
        data = sign(nxt.timestamp, signers_for(Timestamp.type, signers, root))
        check_signed(root, Timestamp.type, nxt.timestamp, self.root)
        staging.add_metadata("timestamp.json", data)

    def _verify_and_commit(self, staging: Staging, live: LiveFeed | None, newest_root: bytes,
                           expect: Mapping[str, TargetFile], download: set[str] | frozenset[str] = frozenset(),
                           before_commit: Callable[[], None] | None = None) -> list[str]:
        """Check the staged state as every kind of existing client, then switch it in."""
        layers = [staging.dir, self.layout.root]
        newest = Metadata[Root].from_bytes(newest_root).signed
        clients = [Client(f"a fresh client bootstrapped from root v{newest.version}", newest_root)]
        warnings: list[str] = []
        if live is not None:
            clients.append(Client(f"a client that trusted root v{live.root_version}", live.root.raw,
                                  ClientCache(live.timestamp.raw, live.snapshot.raw, live.targets.raw)))
            if live.root_version > 1:
                clients.append(Client("a client that starts from the first root (1.root.json)", live.root_bytes(1)))
        for number, client in enumerate(clients):
            check_as(client, layers, feed=self.root, work=staging.work, expect=expect,
                     download=download if number == 0 else ())
        if live is not None and newest.version > live.root_version:
            hidden = {f"metadata/{v}.root.json" for v in range(live.root_version + 1, newest.version + 1)}
            between = Client(f"a client on root v{live.root_version} before root v{newest.version} is live",
                             live.root.raw, ClientCache(live.timestamp.raw, live.snapshot.raw, live.targets.raw))
            try:
                check_as(between, layers, feed=self.root, work=staging.work, expect=expect, hidden=hidden)
            except PublishError:
                warnings.append(f"clients on root v{live.root_version} may refuse the feed for the instant between "
                                f"the new timestamp and root v{newest.version} going live (the old targets, "
                                "snapshot and timestamp keys were not given to sign alongside the new ones)")
        self.checkpoint("verified")
        if before_commit is not None:
            before_commit()
        staging.commit(self.checkpoint)
        self.checkpoint("committed")
        return warnings

    def _warnings(self, live: LiveFeed, window: timedelta | None = None) -> list[str]:
        return [w for w in (e.warning() for e in expiry.report(live, self.clock(), window)) if w]


def expiry_report(feed_dir: Path, *, now: datetime | None = None,
                  window: timedelta | None = None) -> list[RoleExpiry]:
    """Each role's expiry in the feed at `feed_dir` (root, targets, snapshot, timestamp)."""
    live = load_live(FeedLayout(Path(feed_dir)))
    if live is None:
        raise FeedStateError(f"{feed_dir} holds no feed")
    return expiry.report(live, now or expiry.now_utc(), window)


def export_root(feed_dir: Path, out_file: Path) -> ExportedRoot:
    """Write the feed's current trusted root.json (its chain checked) to `out_file` for an app to ship."""
    return FeedPublisher(Path(feed_dir)).export_root(Path(out_file))


