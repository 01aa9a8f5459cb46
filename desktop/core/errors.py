"""Errors raised by the core, as a tree callers can catch at the right level.

    DesktopError
    ├── UsageError               bad input from the user (a flag, a path)
    ├── StateError               a state file could not be written
    ├── TransientError           retry later, never pinned to a version
    │   ├── NetworkError         connection refused, timeout, 5xx, bad redirect
    │   ├── RegistryError        the registry's answer is unusable (garbage, too big, 404)
    │   ├── DownloadError        truncated download, size over the announced length
    │   ├── DiskSpaceError       not enough free space to download or extract
    │   └── CancelledError       the user or the shell stopped the work
    ├── InvalidReleaseError      the published package itself is bad (deterministic)
    │   ├── DigestMismatchError  bytes do not match the published digest
    │   ├── UnsafeArchiveError   traversal, links outside, devices, bombs, ...
    │   ├── ManifestError        runtime.json missing, unparsable, wrong version, no entry
    │   ├── NativeDepError       a bundled native dependency is missing or differs
    │   └── HostGateError        requires_shell does not admit this shell
    ├── TrustError               feed metadata failed verification (signature, expiry, rollback)
    └── LaunchError              the runtime could not be started
"""

from __future__ import annotations


class DesktopError(Exception):
    """Base of every error the core raises on purpose."""


class UsageError(DesktopError):
    """The user asked for something that cannot be done as asked."""


class StateError(DesktopError):
    """A state file could not be written."""


class TransientError(DesktopError):
    """A failure that may go away by itself; retried later with backoff."""


class NetworkError(TransientError):
    """The registry could not be reached or answered with a server error."""


class RegistryError(TransientError):
    """The registry answered, but the answer cannot be used."""


class DownloadError(TransientError):
    """A download ended early or sent more than announced."""


class DiskSpaceError(TransientError):
    """Not enough free disk space."""


class CancelledError(TransientError):
    """The operation was cancelled."""


class InvalidReleaseError(DesktopError):
    """The published release is broken; retrying the same bytes will not help."""


class DigestMismatchError(InvalidReleaseError):
    """The downloaded bytes do not match the published digest."""


class UnsafeArchiveError(InvalidReleaseError):
    """The archive tries to write outside its directory or is otherwise unsafe."""


class ManifestError(InvalidReleaseError):
    """runtime.json is missing or does not describe a launchable runtime."""


class NativeDepError(InvalidReleaseError):
    """A native dependency named by the manifest is missing or differs from the bundled copy."""


class HostGateError(InvalidReleaseError):
    """The release requires a different shell version."""


class TrustError(DesktopError):
    """Signed feed metadata failed verification."""


class LaunchError(DesktopError):
    """The runtime could not be started."""
