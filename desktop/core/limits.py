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
    """Timeouts, rates and caps for every request.

    A server that drips one byte every few seconds resets a per-read timeout forever; so
    every request also has a minimum average rate (after a grace period) and documents an
    overall deadline (TUF's slow-retrieval protection).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    document_deadline: float = 60.0
    min_rate: float = 4096.0  # bytes per second, averaged over the whole response
    rate_grace: float = 15.0  # seconds before the rate is enforced
    max_document_bytes: int = 16 * 1024 * 1024
    max_download_bytes: int = 4 * 1024 * 1024 * 1024
    min_free_bytes: int = 64 * 1024 * 1024
