"""The feed as clients see it now: the newest root, and the timestamp -> snapshot -> targets chain.

The unversioned `targets.json`/`snapshot.json` copies are never trusted here: a publisher
killed before its timestamp went live may have replaced them with a state no client saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from desktop.core.publisher.errors import FeedStateError
from desktop.core.publisher.files import FeedLayout

MAX_METADATA_BYTES = 16 * 1024 * 1024

T = TypeVar("T", Root, Targets, Snapshot, Timestamp)


@dataclass(frozen=True)
class Document(Generic[T]):
    """One metadata file as read: its exact bytes and its parsed form."""

    raw: bytes
    md: Metadata[T]

    @property
    def signed(self) -> T:
        return self.md.signed


def read_document(layout: FeedLayout, name: str, kind: type[T]) -> Document[T]:
    path = layout.metadata / name
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError:
        raise FeedStateError(f"the feed {layout.root} has no {name}") from None
    except OSError as exc:
        raise FeedStateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise FeedStateError(f"{path} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        md: Metadata[Any] = Metadata.from_bytes(raw)
    except Exception as exc:  # tuf raises several unrelated types for a broken document
        raise FeedStateError(f"cannot parse {path}: {exc}") from None
    if not isinstance(md.signed, kind):
        raise FeedStateError(f"{path} does not hold {kind.type} metadata")
    return Document(raw, md)


@dataclass(frozen=True)
class LiveFeed:
    """The state of an existing feed that a client reading it right now would get."""

    layout: FeedLayout
    root: Document[Root]
    timestamp: Document[Timestamp]
    snapshot: Document[Snapshot]
    targets: Document[Targets]

    @property
    def root_version(self) -> int:
        return int(self.root.signed.version)

    def root_bytes(self, version: int) -> bytes:
        return read_document(self.layout, f"{version}.root.json", Root).raw

    def next_version(self, role: str, current: int) -> int:
        """A version above the live one and above any orphan file a killed publisher left."""
        return max([current, *self.layout.versions(role)]) + 1


def feed_exists(layout: FeedLayout) -> bool:
    return (layout.metadata / "1.root.json").is_file() or (layout.metadata / "root.json").is_file()


def load_live(layout: FeedLayout) -> LiveFeed | None:
    """The live feed, or None when the directory holds no feed yet."""
    if not feed_exists(layout):
        return None
    roots = layout.versions(Root.type)
    if not roots:
        raise FeedStateError(f"the feed {layout.root} has root.json but no 1.root.json")
    root = read_document(layout, f"{roots[-1]}.root.json", Root)
    if root.signed.version != roots[-1]:
        raise FeedStateError(f"{roots[-1]}.root.json of {layout.root} holds root version {root.signed.version}")
    timestamp = read_document(layout, "timestamp.json", Timestamp)
    consistent = root.signed.consistent_snapshot
    snapshot_version = timestamp.signed.snapshot_meta.version
    snapshot = read_document(layout, f"{snapshot_version}.snapshot.json" if consistent else "snapshot.json",
                             Snapshot)
    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise FeedStateError(f"the snapshot of {layout.root} lists no targets.json")
    targets = read_document(layout, f"{targets_meta.version}.targets.json" if consistent else "targets.json",
                            Targets)
    return LiveFeed(layout, root, timestamp, snapshot, targets)


def verified_root_chain(layout: FeedLayout) -> Document[Root]:
    """The newest root after checking every rotation from 1.root.json, as a client walks them.

    Each root N+1 must be signed by a threshold of root N's root keys and of its own, and
    carry version N+1; 1.root.json must be signed by its own root keys.
    """
    versions = layout.versions(Root.type)
    if not versions:
        raise FeedStateError(f"{layout.root} holds no feed (no metadata/1.root.json)")
    if versions != list(range(1, len(versions) + 1)):
        raise FeedStateError(f"the root history of {layout.root} has gaps: {versions}")
    trusted = read_document(layout, "1.root.json", Root)
    _verify_root(trusted, trusted, layout, 1)
    for version in versions[1:]:
        new = read_document(layout, f"{version}.root.json", Root)
        _verify_root(trusted, new, layout, version)
        _verify_root(new, new, layout, version)
        trusted = new
    return trusted


def _verify_root(signer: Document[Root], new: Document[Root], layout: FeedLayout, version: int) -> None:
    if new.signed.version != version:
        raise FeedStateError(f"{version}.root.json of {layout.root} holds root version {new.signed.version}")
    try:
        signer.signed.verify_delegate(Root.type, new.md.signed_bytes, new.md.signatures)
    except UnsignedMetadataError as exc:
        raise FeedStateError(f"{version}.root.json of {layout.root} is not signed by a threshold of the root "
                             f"keys of root v{signer.signed.version}: {exc}") from None
