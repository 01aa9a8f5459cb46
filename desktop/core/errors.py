"""Errors raised by the core, as a tree callers can catch at the right level.

    DesktopError
    ├── UsageError               bad input from the user (a flag, a path, an environment value)
    ├── DataDirError             the data directory cannot be used (not a directory, not ours, ...)
    ├── ConflictError            what exists already forbids it (a key file, a version's other bytes)
    ├── SigningKeyError          a signing or public key file cannot be read or written
    ├── StateError               a state file could not be written
    ├── CancelledError           the user or the shell stopped the work (not a failure)
    ├── TransientError           retry later with backoff; never pinned to a version
    │   ├── NetworkError         connection refused, timeout, 5xx, too slow, past the deadline
    │   ├── RegistryError        the registry's answer is unusable (garbage, too big, 404)
    │   ├── DownloadError        truncated download, more than announced
    │   ├── BusyError            another process is staging in this data dir
    │   ├── DigestMismatchError  the bytes do not match the registry's or the signed length/digest
    │   │   └── UnexpectedContentError  plainly not the archive (an HTML page, an encoded body)
    │   └── DiskSpaceError       not enough free space to download or extract
    ├── InvalidReleaseError      the published package itself is bad (deterministic, pinned)
    │   ├── UnsafeArchiveError   traversal, links outside, devices, bombs, ...
    │   ├── ManifestError        runtime.json missing, unparsable, wrong version, no entry
    │   ├── NativeDepError       a bundled native dependency is missing or differs
    │   └── HostGateError        requires_shell does not admit this shell
    ├── TrustError               feed metadata failed verification (signature, expiry, rollback)
    └── LaunchError              the runtime could not be started

Whether a failure is retried or remembered is decided on these types
(`desktop.core.policy.classify`), never on message text.
"""

from __future__ import annotations


class DesktopError(Exception):
    """Base of every error the core raises on purpose."""


class UsageError(DesktopError):
    """The user asked for something that cannot be done as asked (exit code 2)."""


class DataDirError(DesktopError):
    """The data directory cannot be used safely."""


class ConflictError(DesktopError):
    """The request conflicts with what exists: a key file already there, a version already published."""


class SigningKeyError(DesktopError):
    """A key file cannot be read, written or understood."""


class StateError(DesktopError):
    """A state file could not be written."""


class CancelledError(DesktopError):
    """The operation was cancelled (quitting, a signal, the user's Cancel)."""


class TransientError(DesktopError):
    """A failure that may go away by itself; retried later with backoff, never pinned."""


class NetworkError(TransientError):
    """The registry could not be reached, answered with a server error, or was too slow."""


class RegistryError(TransientError):
    """The registry answered, but the answer cannot be used."""


class DownloadError(TransientError):
    """A download ended early or sent more than announced."""


class BusyError(TransientError):
    """Another process holds the staging lock of this data dir."""


class DigestMismatchError(TransientError):
    """The downloaded bytes do not match the published length or digest.

    A proxy's block page, a re-encoding CDN, a torn cached file and a tampered mirror all look
    like this: the release may be fine, so it is retried, never pinned.
    """


class UnexpectedContentError(DigestMismatchError):
    """The response is plainly not the archive: an HTML page, a JSON error, an encoded body."""


class DiskSpaceError(TransientError):
    """Not enough free disk space."""


class InvalidReleaseError(DesktopError):
    """The published release is broken; retrying the same bytes will not help."""


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
