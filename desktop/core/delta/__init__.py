"""Delta updates: a release rebuilt from the previous one plus only what changed.

Publisher:  scan_manifest(tree) -> FileManifest (sign its bytes or digest);
            build_delta(old_root, old_manifest, new_root, new_manifest, out) -> DeltaStats;
            should_publish(delta_size, full_size).
Client:     apply_delta(read, base_root, base_manifest, target, dest) -> ApplyStats;
            verify_tree(root, manifest) -> list[Mismatch].

The file format is described in `format`, the encoder's choices in `encode`.
"""

from desktop.core.delta.apply import ApplyStats, DeltaLimits, apply_delta
from desktop.core.delta.encode import DeltaStats, EncodeOptions, build_delta, should_publish
from desktop.core.delta.errors import DeltaError, FileManifestError
from desktop.core.delta.format import DeltaHeader
from desktop.core.delta.manifest import (
    FileManifest,
    ManifestEntry,
    ManifestLimits,
    Mismatch,
    parse_manifest,
    scan_manifest,
    verify_tree,
)

__all__ = [
    "ApplyStats",
    "DeltaError",
    "DeltaHeader",
    "DeltaLimits",
    "DeltaStats",
    "EncodeOptions",
    "FileManifest",
    "FileManifestError",
    "ManifestEntry",
    "ManifestLimits",
    "Mismatch",
    "apply_delta",
    "build_delta",
    "parse_manifest",
    "scan_manifest",
    "should_publish",
    "verify_tree",
]
