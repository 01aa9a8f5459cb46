"""`FeedPublisher`: publish, refresh, rotate and export a TUF feed, each checked before it goes live.

Every operation runs under the feed's lock and follows one path: read the live state,
refuse keys the current root does not trust for the roles being signed, build and sign the
next state into a staging directory (`draft.py`), read it with the real `tuf.ngclient` as
the clients that exist would (one that trusted the previous root and kept its metadata, a
fresh one bootstrapped from the new root, one that starts from `1.root.json`), and only
then switch it in (`files.py` has the order). Any failure before the switch leaves the live
feed as it was, byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from packaging.version import Version
from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

from desktop.core import pack
from desktop.core.archive import safe_extract
from desktop.core.delta import FileManifest, scan_manifest
from desktop.core.errors import ConflictError, UsageError
from desktop.core.manifest import validate_package
from desktop.core.publisher import expiry
from desktop.core.publisher.deltas import DELTA_BASES, build_deltas, previous_releases, runtime_line
from desktop.core.publisher.draft import (
    INDEX,
    Draft,
    RoleKeys,
    Thresholds,
    assign_keys,
    describe,
    new_feed,
    resolve_thresholds,
    verifies,
)
from desktop.core.publisher.errors import (
    ExpiredRoleError,
    FeedStateError,
    FeedWriteError,
    NoSigningKeyError,
    PublishError,
)
from desktop.core.publisher.expiry import RENEW_WINDOW, RoleExpiry
from desktop.core.publisher.files import (
    Checkpoint,
    FeedLayout,
    Staging,
    feed_lock,
    make_public_dir,
    remove_stale_staging,
    replace_public_file,
    sha256_file,
)
from desktop.core.publisher.live import LiveFeed, feed_exists, load_live, verified_root_chain
from desktop.core.publisher.results import ExportedRoot, FeedCreated, Published, Refreshed, RootRotated
from desktop.core.publisher.signing import TOP_ROLES, refuse_strangers, require, trusted_for, unique
from desktop.core.publisher.verify import Client, ClientCache, check_as
from desktop.core.tree import remove_tree_quietly
from desktop.core.versions import parse_version

# Same bytes, same tree, same deltas: a republish with new facts (a wider rollout) keeps these.
KEPT_ON_REPUBLISH = ("files_sha256", "unpacked_size", "deltas")

FORMATS: tuple[str, ...] = tuple(pack.FORMATS)

Clock = Callable[[], datetime]
Signers = Signer | Sequence[Signer]


def _signer_list(signers: Signers | None) -> list[Signer]:
    if signers is None:
        return []
    if isinstance(signers, Signer):
        return [signers]
    return unique(signers)


def _no_checkpoint(step: str) -> None:
    return None


class FeedPublisher:
    """A TUF feed in a directory, written only through verified, atomic switches.

    `clock` gives the time metadata is signed at (tests move it forward to reach expiry; the
    client check before the switch runs at the real time); `lock_timeout` is how long to
    wait for another publisher (0: fail at once with `FeedBusyError`); `checkpoint(step)` is
    called at each named step ("locked", "authorised", "staged", "verified",
    "replace <path>", "committed") so tests can inject a failure or a kill there.
    """

    delta_bases = DELTA_BASES

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
        return feed_exists(self.layout)

    # -- operations -----------------------------------------------------------------------
    def create(self, signers: Signers, *, thresholds: Thresholds = None, keys: RoleKeys = None) -> FeedCreated:
        """A new feed: root, targets, snapshot and timestamp v1.

        Every role is held by every signer's key unless `keys` maps each role to public keys;
        `thresholds` is one number for every role or a per-role mapping (default 1).
        """
        given = _signer_list(signers)
        if not given:
            raise NoSigningKeyError(self._no_key_message(new=True))
        if self.exists():
            raise ConflictError(f"{self.root} already holds a feed")
        with self._session(create=True) as staging:
            if load_live(self.layout) is not None:
                raise ConflictError(f"{self.root} already holds a feed")
            base = new_feed(self.layout, staging, given, thresholds, keys, self.clock())
            staging.add_metadata("timestamp.json", base.timestamp.raw)
            self.checkpoint("staged")
            self._verify_and_commit(staging, None, Draft.from_base(base))
            ids, limits = describe(base.root.signed)
            return FeedCreated(1, ids, limits)

    def publish(self, runtime_dir: Path, signers: Signers, *, channel: str = "stable", rollout: float = 100.0,
                notes: str = "", fmt: str = "tar.gz", published_at: str | None = None,
                thresholds: Thresholds = None, keys: RoleKeys = None,
                window: timedelta = RENEW_WINDOW) -> Published:
        """Validate, pack reproducibly and add one runtime version (creating the feed if needed).

        Needs the targets, snapshot and timestamp keys; also renews root when it expires within
        `window` and a threshold of root keys was given. `thresholds`/`keys` apply only when
        the feed is created. The same version with different bytes is refused (`UsageError`);
        the same bytes with new facts (a wider rollout) are re-signed.
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
            base = live or new_feed(self.layout, staging, given, thresholds, keys, self.clock())
            root = base.root.signed
            refuse_strangers([root], given, self.root, Targets.type)
            for role in (Targets.type, Snapshot.type, Timestamp.type):
                require(root, role, given, self.root)
            self.checkpoint("authorised")
            name = f"{manifest.name}-{manifest.version}.{fmt}"
            archive = staging.work / name
            pack.pack_directory(runtime_dir, archive, fmt)
            sha256, length = sha256_file(archive)
            built: tuple[tuple[str, int], ...] = ()
            draft = Draft.from_base(base)
            published = draft.targets.signed.targets
            for path, other in published.items():
                if (path != INDEX and (other.custom or {}).get("kind", "runtime") == "runtime"
                        and str((other.custom or {}).get("version")) == str(manifest.version)
                        and other.hashes.get("sha256") != sha256):
                    raise ConflictError(f"version {manifest.version} is already published as {path} "
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
            previous = published.get(name)
            if previous is not None and previous.hashes.get("sha256") == sha256:
                old = dict(previous.custom or {})
                custom["published"] = old.get("published", custom["published"])
                for kept in KEPT_ON_REPUBLISH:
                    if kept in old:
                        custom[kept] = old[kept]
                if live is not None and old == custom:
                    return Published(name, str(manifest.version), channel, rollout, sha256, length, True,
                                     tuple(self._warnings(live, window)))
            else:
                facts, built = self._manifest_and_deltas(staging, draft, runtime_dir, scan_manifest(runtime_dir),
                                                         name=name, version=manifest.version,
                                                         line=runtime_line(channel), full_length=length)
                custom.update(facts)
            stored = f"{sha256}.{name}"
            if not (self.layout.targets / stored).exists():
                staging.add_target_file(archive, stored)
            draft.add_target(name, length, sha256, custom)
            draft.stage_index(staging, self.layout)
            self._renew_in_window(draft, given, window, roles=(Root.type,), explicit=())
            draft.stage(staging, given, self.clock(), self.root)
            self.checkpoint("staged")
            warnings = self._verify_and_commit(staging, live, draft)
            warnings += self._warnings(self._require_live(), window)
            return Published(name, str(manifest.version), channel, rollout, sha256, length, False, tuple(warnings),
                             built)

    def _manifest_and_deltas(self, staging: Staging, draft: Draft, tree: Path, files: FileManifest, *, name: str,
                             version: Version, line: Callable[[Mapping[str, Any]], bool],
                             full_length: int) -> tuple[dict[str, Any], tuple[tuple[str, int], ...]]:
        """The release's file-manifest facts; deltas from the newest older releases of `line` are
        added to the draft as their own targets and listed under "deltas" (also returned: base, bytes)."""
        facts: dict[str, Any] = {"files_sha256": files.digest, "unpacked_size": files.total_size}
        bases = previous_releases(draft.targets.signed.targets, version=version, line=line, count=self.delta_bases)
        deltas: dict[str, str] = {}
        sizes: list[tuple[str, int]] = []
        for built in build_deltas(staging.work, self.layout.targets, tree, files, release_name=name,
                                  version=version, bases=bases, full_length=full_length):
            delta_sha, delta_length = sha256_file(built.path)
            staging.add_target_file(built.path, f"{delta_sha}.{built.name}")
            draft.add_target(built.name, delta_length, delta_sha, built.custom)
            deltas[str(built.base)] = built.name
            sizes.append((str(built.base), delta_length))
        if deltas:
            facts["deltas"] = deltas
        return facts, tuple(sizes)

    def publish_artefact(self, write: Callable[[Path], None], name: str, custom: Mapping[str, Any],
                         signers: Signers, *, same_release: Callable[[Mapping[str, Any]], bool],
                         line: Callable[[Mapping[str, Any]], bool] | None = None,
                         published_at: str | None = None, window: timedelta = RENEW_WINDOW) -> Published:
        """Add a release archive that `write(path)` produces (a shell build) as target `name` with `custom`.

        `same_release(custom)` says whether a published target is the same release (for a shell:
        kind, version and platform). The same release with other bytes is refused
        (`ConflictError`); the same bytes with new facts (a wider rollout) are re-signed.
        With `line(custom)` (the releases a client may already have: for a shell, its platform
        and channel) the target also gets its signed file manifest and deltas from the newest
        older releases of that line.
        """
        given = _signer_list(signers)
        if not given:
            raise NoSigningKeyError(self._no_key_message(new=not self.exists()))
        with self._session(create=True) as staging:
            live = load_live(self.layout)
            base = live or new_feed(self.layout, staging, given, None, None, self.clock())
            root = base.root.signed
            refuse_strangers([root], given, self.root, Targets.type)
            for role in (Targets.type, Snapshot.type, Timestamp.type):
                require(root, role, given, self.root)
            self.checkpoint("authorised")
            archive = staging.work / name
            write(archive)
            sha256, length = sha256_file(archive)
            built: tuple[tuple[str, int], ...] = ()
            draft = Draft.from_base(base)
            published = draft.targets.signed.targets
            for path, other in published.items():
                if path != INDEX and same_release(other.custom or {}) and other.hashes.get("sha256") != sha256:
                    raise ConflictError(f"{path} is already published as this release with different bytes; "
                                        "publish a new version instead")
            facts: dict[str, Any] = {**custom, "published": published_at or self.clock().isoformat()}
            previous = published.get(name)
            if previous is not None and previous.hashes.get("sha256") == sha256:
                old = dict(previous.custom or {})
                facts["published"] = old.get("published", facts["published"])
                for kept in KEPT_ON_REPUBLISH:
                    if kept in old:
                        facts[kept] = old[kept]
                if live is not None and old == facts:
                    return Published(name, str(facts.get("version")), str(facts.get("channel")),
                                     float(facts.get("rollout", 100)), sha256, length, True,
                                     tuple(self._warnings(live, window)))
            elif line is not None:
                # The archive as a client extracts it: its file manifest, and deltas from older releases.
                tree = staging.work / "release-tree"
                files = scan_manifest(tree, known=safe_extract(archive, tree, hash_files=True))
                version = parse_version(facts.get("version"))
                if version is None:
                    raise UsageError(f"{name} has no valid version")
                more, built = self._manifest_and_deltas(staging, draft, tree, files, name=name, version=version,
                                                        line=line, full_length=length)
                facts.update(more)
                remove_tree_quietly(tree)
            stored = f"{sha256}.{name}"
            if not (self.layout.targets / stored).exists():
                staging.add_target_file(archive, stored)
            draft.add_target(name, length, sha256, facts)
            draft.stage_index(staging, self.layout)
            self._renew_in_window(draft, given, window, roles=(Root.type,), explicit=())
            draft.stage(staging, given, self.clock(), self.root)
            self.checkpoint("staged")
            warnings = self._verify_and_commit(staging, live, draft)
            warnings += self._warnings(self._require_live(), window)
            return Published(name, str(facts.get("version")), str(facts.get("channel")),
                             float(facts.get("rollout", 100)), sha256, length, False, tuple(warnings), built)

    def refresh(self, signers: Signers, *, window: timedelta = RENEW_WINDOW, renew: Sequence[str] = (),
                timestamp_expiry: timedelta | None = None) -> Refreshed:
        """Re-sign snapshot and timestamp, and every other role that expires within `window`.

        Root and targets are renewed only with a threshold of their own keys; without them a
        role still valid is left as it is and named in `warnings`, a role already expired is
        refused (`ExpiredRoleError`). `renew` forces roles whatever their expiry.
        `timestamp_expiry` overrides the timestamp's validity; a value <= 0 signs an already
        expired timestamp (to test clients with; the client check then skips its freshness).
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
            draft = Draft.from_base(live)
            draft.change(Snapshot.type)
            self._renew_in_window(draft, given, window, roles=(Root.type, Targets.type), explicit=tuple(renew))
            on_purpose = timestamp_expiry is not None and timestamp_expiry <= timedelta(0)
            draft.stage(staging, given, self.clock(), self.root,
                        timestamp_expiry=None if on_purpose else timestamp_expiry)
            self.checkpoint("staged")

            def expire_timestamp() -> None:
                assert timestamp_expiry is not None
                draft.restage_timestamp(staging, given, self.clock() + timestamp_expiry, self.root)

            warnings = self._verify_and_commit(staging, live, draft,
                                               before_commit=expire_timestamp if on_purpose else None)
            after = self._require_live()
            report = expiry.report(after, self.clock(), window)
            warnings += [w for w in (e.warning() for e in report) if w]
            renewed = tuple(role for role in TOP_ROLES if role in draft.changed)
            return Refreshed(int(after.timestamp.signed.version), after.root_version, renewed,
                             tuple(dict.fromkeys(warnings)), tuple(report))

    def rotate_root(self, old_signers: Signers, new_signers: Signers, *, thresholds: Thresholds = None,
                    keys: RoleKeys = None) -> RootRotated:
        """Root N+1, signed by a threshold of root N's root keys and of its own.

        By default every role goes to the new signers' keys; `keys` maps only the roles to
        change to their new public keys. Thresholds default to the current ones. Targets,
        snapshot and timestamp are re-signed only if they no longer verify under the new
        root, by the new keys and by the old ones given (so a client still on root N accepts
        them while root N+1 is switched in).
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
            draft = Draft.from_base(live)
            future = draft.root.signed
            assignment = dict(keys) if keys else {role: [s.public_key for s in new] for role in TOP_ROLES}
            assign_keys(future, assignment, resolve_thresholds(thresholds, current))
            refuse_strangers([future], new, self.root, Root.type)
            self.checkpoint("authorised")
            draft.changed.add(Root.type)
            for role, md in ((Targets.type, live.targets.md), (Snapshot.type, live.snapshot.md),
                             (Timestamp.type, live.timestamp.md)):
                if not verifies(future, role, md):
                    draft.change(role)
            draft.stage(staging, [*old, *new], self.clock(), self.root)
            self.checkpoint("staged")
            warnings = self._verify_and_commit(staging, live, draft)
            ids, limits = describe(future)
            resigned = tuple(r for r in TOP_ROLES if r in draft.changed and r != Root.type)
            return RootRotated(int(future.version), ids, limits, resigned, tuple(warnings))

    def expiry_report(self, *, window: timedelta | None = None) -> list[RoleExpiry]:
        """Each role's expiry at the publisher's clock, root first."""
        return expiry.report(self._require_live(), self.clock(), window)

    def export_root(self, out: Path) -> ExportedRoot:
        """Write the feed's newest root, its chain from 1.root.json checked, for an app release to ship."""
        root = verified_root_chain(self.layout)
        try:
            replace_public_file(Path(out), root.raw)
        except OSError as exc:
            raise PublishError(f"cannot write {out}: {exc.strerror or exc}") from None
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
        try:
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
        except OSError as exc:
            # Before the switch nothing live was touched; during it, each file went in whole and
            # timestamp.json last, so clients still read the old state or the new one.
            where = f" ({exc.filename})" if exc.filename else ""
            raise FeedWriteError(f"cannot write the feed {self.root}: {exc.strerror or exc}{where}") from exc

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

    def _renew_in_window(self, draft: Draft, signers: list[Signer], window: timedelta,
                         roles: Sequence[str], explicit: Sequence[str]) -> None:
        """Mark for renewal each of `roles` expiring within `window` whose keys were given.

        A role left alone shows up in the expiry report afterwards (the caller's warnings);
        one that has already expired cannot be left alone: the feed would stay dead.
        """
        now = self.clock()
        base = draft.base
        root = base.root.signed
        current: Mapping[str, Root | Targets] = {Root.type: base.root.signed, Targets.type: base.targets.signed}
        for role in roles:
            signed = current[role]
            if role in draft.changed:
                continue
            if role not in explicit and signed.expires - now > window:
                continue
            if len(trusted_for(root, role, signers)) >= root.roles[role].threshold:
                if role == Root.type:
                    draft.changed.add(Root.type)
                else:
                    draft.change(role)
                continue
            if role in explicit:
                require(root, role, signers, self.root)
            if signed.expires <= now:
                when = signed.expires.strftime("%Y-%m-%d %H:%M UTC")
                raise ExpiredRoleError(f"the {role} metadata of {self.root} expired on {when}; renewing it needs "
                                       f"the {role} key(s), which were not given (--key FILE)")

    def _verify_and_commit(self, staging: Staging, live: LiveFeed | None, draft: Draft,
                           before_commit: Callable[[], None] | None = None) -> list[str]:
        """Read the staged state as every kind of existing client, then switch it in."""
        layers = [staging.dir, self.layout.root]
        expect: Mapping[str, TargetFile] = dict(draft.targets.signed.targets)
        newest_root = draft.newest_root
        newest = Metadata[Root].from_bytes(newest_root).signed
        clients = [Client(f"a fresh client bootstrapped from root v{newest.version}", newest_root)]
        warnings: list[str] = []
        if live is not None:
            cache = ClientCache(live.timestamp.raw, live.snapshot.raw, live.targets.raw)
            clients.append(Client(f"a client that trusted root v{live.root_version}", live.root.raw, cache))
            if live.root_version > 1:
                clients.append(Client("a client that starts from the first root (1.root.json)", live.root_bytes(1)))
        for number, client in enumerate(clients):
            check_as(client, layers, feed=self.root, work=staging.work, expect=expect,
                     download=draft.new_targets if number == 0 else ())
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

