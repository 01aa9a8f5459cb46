"""Bounds on everything untrusted: archive contents and network answers (small, import-cheap)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractLimits:
    """Caps that make an archive bomb fail instead of filling the disk.

    `max_members` counts what a release is made of, files and links; directories have their
    own cap (a 90k-file runtime has some 11k of them, which must not count against the files).
    """

    max_members: int = 100_000  # regular files, symlinks and hardlinks
    max_directories: int = 100_000
    max_total_bytes: int = 4 * 1024**3  # actual bytes written, not declared sizes
    max_member_bytes: int = 2 * 1024**3


@dataclass(frozen=True)
class NetConfig:
    """Timeouts and caps for every request."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_document_bytes: int = 16 * 1024 * 1024
    max_download_bytes: int = 4 * 1024 * 1024 * 1024
    min_free_bytes: int = 64 * 1024 * 1024
