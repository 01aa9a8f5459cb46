"""The publisher's side of the feed: a TUF repository on disk, written with tuf.api.metadata.

Layout (serve `DIR` from any static HTTP server or bucket):

    DIR/metadata/N.root.json, root.json           every root version (clients walk rotations)
    DIR/metadata/N.targets.json, N.snapshot.json  consistent snapshots: safe behind a CDN
    DIR/metadata/timestamp.json                   the only file a client always fetches
    DIR/targets/<sha256>.<name>                   hash-prefixed release archives and index.json

Files are written archives first, timestamp last, each atomically, so a client that reads
the feed while a publish runs sees either the old or the new consistent state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from desktop.core.errors import UsageError
from desktop.core.manifest import validate_package
from desktop.core.pack import pack_directory
from desktop.core.state import atomic_write_bytes

INDEX = "index.json"
FORMATS = ("tar.gz", "zip", "7z")
DEFAULT_EXPIRY = {
    Root.type: timedelta(days=365),
    Targets.type: timedelta(days=365),
    Snapshot.type: timedelta(days=30),
    Timestamp.type: timedelta(days=7),
}
TOP_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)

T = TypeVar("T", Root, Targets, Snapshot, Timestamp)


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    channel: str
    rollout: float
    sha256: str
    length: int
    unchanged: bool


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class FeedRepository:
    """A TUF repository in a directory, signed with one key per call (all roles by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.metadata_dir = root / "metadata"
        self.targets_dir = root / "targets"

    def exists(self) -> bool:
        return (self.metadata_dir / "root.json").is_file()

    # -- reading and writing metadata -------------------------------------------------
    def _load(self, role: str, kind: type[T]) -> Metadata[T]:
        path = self.metadata_dir / f"{role}.json"
        try:
            md = Metadata.from_file(str(path))
        except Exception as exc:  # tuf raises several unrelated types for a broken file
            raise UsageError(f"cannot read feed metadata {path}: {exc}") from None
        if not isinstance(md.signed, kind):
            raise UsageError(f"{path} does not hold {role} metadata")
        return md

    def _save(self, md: Metadata[Any], role: str, signers: list[Signer]) -> None:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        if role != Timestamp.type:
            atomic_write_bytes(self.metadata_dir / f"{md.signed.version}.{role}.json", data)
        atomic_write_bytes(self.metadata_dir / f"{role}.json", data)

    def _bump(self, md: Metadata[Any], role: str, expiry: timedelta | None = None) -> None:
        md.signed.version += 1
        md.signed.expires = _now() + (expiry if expiry is not None else DEFAULT_EXPIRY[role])

    # -- operations --------------------------------------------------------------------
    def initialize(self, signer: Signer) -> None:
        """Root, targets, snapshot and timestamp v1, every role held by `signer` (threshold 1)."""
        if self.exists():
            raise UsageError(f"{self.root} already holds a feed")
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        now = _now()
        root = Root(expires=now + DEFAULT_EXPIRY[Root.type], consistent_snapshot=True)
        for role in TOP_ROLES:
            root.add_key(signer.public_key, role)
        targets = Targets(expires=now + DEFAULT_EXPIRY[Targets.type])
        snapshot = Snapshot(expires=now + DEFAULT_EXPIRY[Snapshot.type])
        timestamp = Timestamp(expires=now + DEFAULT_EXPIRY[Timestamp.type])
        self._save(Metadata(root), Root.type, [signer])
        self._save(Metadata(targets), Targets.type, [signer])
        self._save(Metadata(snapshot), Snapshot.type, [signer])
        self._save(Metadata(timestamp), Timestamp.type, [signer])

    def publish(self, runtime_dir: Path, signer: Signer, *, channel: str = "stable", rollout: float = 100.0,
                notes: str = "", fmt: str = "tar.gz", published_at: str | None = None) -> Published:
        """Validate, pack reproducibly and add one runtime version; re-sign targets/snapshot/timestamp."""
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        if not 0 <= rollout <= 100:
            raise UsageError("rollout must be a percentage between 0 and 100")
        manifest = validate_package(runtime_dir)
        if not self.exists():
            self.initialize(signer)
        targets = self._load(Targets.type, Targets)
        name = f"{manifest.name}-{manifest.version}.{fmt}"
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".pack-") as tmp:
            archive = Path(tmp) / name
            pack_directory(runtime_dir, archive, fmt)
            sha256, length = _sha256(archive)
            existing = [t for t in targets.signed.targets.values()
                        if t.path != INDEX and str((t.custom or {}).get("version")) == str(manifest.version)]
            for other in existing:
                if other.hashes.get("sha256") != sha256:
                    raise UsageError(f"version {manifest.version} is already published as {other.path} "
                                     "with different bytes; publish a new version instead")
            custom = {
                "version": str(manifest.version),
                "channel": channel,
                "requires_shell": manifest.requires_shell,
                # Canonical JSON (what TUF signs) has no floats.
                "rollout": int(rollout) if float(rollout).is_integer() else f"{rollout:g}",
                "notes": notes,
                "published": published_at or _now().isoformat(),
            }
            previous = targets.signed.targets.get(name)
            if previous is not None:
                old = dict(previous.custom or {})
                custom["published"] = old.get("published", custom["published"])
                if old == custom:
                    return Published(name, str(manifest.version), channel, rollout, sha256, length, True)
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            stored = self.targets_dir / f"{sha256}.{name}"
            if not stored.exists():
                shutil.copyfile(archive, stored.with_suffix(stored.suffix + ".tmp"))
                os.replace(stored.with_suffix(stored.suffix + ".tmp"), stored)
        target = TargetFile(length, {"sha256": sha256}, name, unrecognized_fields={"custom": custom})
        targets.signed.targets[name] = target
        self._write_index(targets)
        self._bump(targets, Targets.type)
        self._save(targets, Targets.type, [signer])
        self._resign_snapshot_and_timestamp(signer, targets.signed.version)
        return Published(name, str(manifest.version), channel, rollout, sha256, length, False)

    def _write_index(self, targets: Metadata[Targets]) -> None:
        names = sorted(path for path in targets.signed.targets if path != INDEX)
        data = json.dumps({"releases": names}, indent=1, sort_keys=True).encode()
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(self.targets_dir / f"{digest}.{INDEX}", data)
        targets.signed.targets[INDEX] = TargetFile(len(data), {"sha256": digest}, INDEX)

    def _resign_snapshot_and_timestamp(self, signer: Signer, targets_version: int | None = None,
                                       timestamp_expiry: timedelta | None = None) -> None:
        snapshot = self._load(Snapshot.type, Snapshot)
        if targets_version is not None:
            snapshot.signed.meta["targets.json"] = MetaFile(version=targets_version)
        self._bump(snapshot, Snapshot.type)
        self._save(snapshot, Snapshot.type, [signer])
        timestamp = self._load(Timestamp.type, Timestamp)
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        self._bump(timestamp, Timestamp.type, timestamp_expiry)
        self._save(timestamp, Timestamp.type, [signer])

    def refresh(self, signer: Signer, *, timestamp_expiry: timedelta | None = None) -> int:
        """Re-sign snapshot and timestamp with new expiries; returns the new timestamp version."""
        if not self.exists():
            raise UsageError(f"{self.root} holds no feed; publish something first")
        self._resign_snapshot_and_timestamp(signer, None, timestamp_expiry)
        return int(self._load(Timestamp.type, Timestamp).signed.version)

    def rotate_root(self, old: Signer, new: Signer) -> int:
        """Root N+1 hands every role to `new`, signed by both keys; the rest is re-signed by `new`."""
        root = self._load(Root.type, Root)
        for role in TOP_ROLES:
            for keyid in list(root.signed.roles[role].keyids):
                root.signed.revoke_key(keyid, role)
            root.signed.add_key(new.public_key, role)
        self._bump(root, Root.type)
        self._save(root, Root.type, [old, new])
        targets = self._load(Targets.type, Targets)
        self._bump(targets, Targets.type)
        self._save(targets, Targets.type, [new])
        self._resign_snapshot_and_timestamp(new, targets.signed.version)
        return int(root.signed.version)

    def releases(self) -> list[dict[str, Any]]:
        targets = self._load(Targets.type, Targets)
        return [{"name": path, "length": t.length, **(t.custom or {})}
                for path, t in sorted(targets.signed.targets.items()) if path != INDEX]


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    length = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length
