"""The publisher's side of the feed: a TUF repository in a directory, served as static files.

Layout (serve `DIR` from any static HTTP server or bucket; skip its dot-files):

    DIR/metadata/N.root.json, root.json           every root version (clients walk rotations)
    DIR/metadata/N.targets.json, N.snapshot.json  consistent snapshots: safe behind a CDN
    DIR/metadata/timestamp.json                   the only file a client always fetches
    DIR/targets/<sha256>.<name>                   hash-prefixed release archives and index.json
    DIR/.publish.lock, DIR/.staging-*/            the publisher's lock and work area

Public surface: `FeedPublisher` (create, publish, refresh, rotate_root, expiry_report,
export_root, releases), the module functions `expiry_report`, `feed_status` and
`export_root`, result types, and the `PublishError` tree in `errors`.
"""

from desktop.core.publisher.draft import INDEX
from desktop.core.publisher.errors import (
    ExpiredRoleError,
    FeedBusyError,
    FeedCheckError,
    FeedStateError,
    FeedWriteError,
    KeyNotAuthorisedError,
    NoSigningKeyError,
    PublishError,
    ThresholdError,
)
from desktop.core.publisher.expiry import DEFAULT_EXPIRY, RENEW_WINDOW, RoleExpiry
from desktop.core.publisher.report import FeedStatus, expiry_report, export_root, feed_status
from desktop.core.publisher.repository import FORMATS, FeedPublisher
from desktop.core.publisher.results import ExportedRoot, FeedCreated, Published, Refreshed, RootRotated
from desktop.core.publisher.signing import TOP_ROLES

__all__ = [
    "DEFAULT_EXPIRY",
    "FORMATS",
    "INDEX",
    "RENEW_WINDOW",
    "TOP_ROLES",
    "ExpiredRoleError",
    "ExportedRoot",
    "FeedBusyError",
    "FeedCheckError",
    "FeedCreated",
    "FeedPublisher",
    "FeedStateError",
    "FeedStatus",
    "FeedWriteError",
    "KeyNotAuthorisedError",
    "NoSigningKeyError",
    "PublishError",
    "Published",
    "Refreshed",
    "RoleExpiry",
    "RootRotated",
    "ThresholdError",
    "expiry_report",
    "export_root",
    "feed_status",
]
