"""Errors of the delta codec, placed in the core's error tree.

    TransientError
    └── DeltaError            the delta cannot rebuild the target here: corrupt or tampered delta,
                              wrong base, a base file changed on disk, a limit exceeded
    InvalidReleaseError
    └── FileManifestError     a file manifest is malformed (bad JSON, unsafe path, over a bound)

A DeltaError is transient on purpose: the same update falls back to the full archive and nothing
is pinned, because a delta that does not apply says nothing about the release itself.
"""

from __future__ import annotations

from desktop.core.errors import InvalidReleaseError, TransientError


class DeltaError(TransientError):
    """The delta could not rebuild the target tree; use the full archive instead."""


class FileManifestError(InvalidReleaseError):
    """A file manifest is malformed or exceeds its bounds."""
