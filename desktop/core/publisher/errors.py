"""Errors the publisher raises, under the core's `DesktopError`.

    DesktopError
    └── PublishError               refused or failed; clients still read the feed as before (exit code 1)
        ├── NoSigningKeyError      no key was given (a key is never generated for a feed)
        ├── KeyNotAuthorisedError  a key the feed's current root does not trust for the role
        ├── ThresholdError         too few of a role's keys to reach its signature threshold
        ├── ExpiredRoleError       a role has expired and the key to renew it was not given
        ├── FeedStateError         the live feed's metadata cannot be read
        ├── FeedCheckError         the new state failed the client's verification before going live
        ├── FeedWriteError         the disk refused a write (full, read-only, not ours)
        └── FeedBusyError          another publisher holds the feed's lock

They are not `UsageError`s: a refused key is a failed publish (exit 1), not a malformed
command line.
"""

from __future__ import annotations

from desktop.core.errors import DesktopError


class PublishError(DesktopError):
    """A publisher operation was refused or failed; the live feed is unchanged."""


class NoSigningKeyError(PublishError):
    """The operation needs a signing key and none was given."""


class KeyNotAuthorisedError(PublishError):
    """A given key is not trusted for the role in the feed's current root."""


class ThresholdError(PublishError):
    """The given keys do not reach a role's signature threshold."""


class ExpiredRoleError(PublishError):
    """A role has already expired and cannot be renewed with the keys given."""


class FeedStateError(PublishError):
    """The live feed's metadata is missing, unreadable or inconsistent."""


class FeedCheckError(PublishError):
    """The staged feed did not verify the way a client would verify it."""


class FeedWriteError(PublishError):
    """A file of the feed could not be written; clients still read a consistent feed."""


class FeedBusyError(PublishError):
    """Another publisher is working on the same feed."""
