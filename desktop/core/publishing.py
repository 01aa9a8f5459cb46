"""The publisher's façade: signing keys and the signed feed (the CLI's publish/keygen commands)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from desktop.core.errors import UsageError


@dataclass(frozen=True)
class KeyInfo:
    public: str
    private_path: Path
    public_path: Path


@dataclass(frozen=True)
class PublishReport:
    name: str
    version: str
    channel: str
    rollout: float
    sha256: str
    length: int
    unchanged: bool
    public_key: str


class Publisher:
    """One feed directory and the keys that sign it."""

    def __init__(self, feed_dir: Path) -> None:
        self.feed_dir = feed_dir

    @staticmethod
    def keygen(out: Path) -> KeyInfo:
        from desktop.core.keys import generate

        pair = generate(out)
        return KeyInfo(pair.public, pair.private_path, pair.public_path)

    def publish(self, runtime_dir: Path, keys: list[Path], *, channel: str = "stable", rollout: float = 100.0,
                notes: str = "", fmt: str = "tar.gz") -> PublishReport:
        from desktop.core.feedrepo import FeedRepository
        from desktop.core.keys import load_signer, public_of

        if not keys:
            raise UsageError("publish needs --key FILE (the feed's signing key); it never invents one")
        signer = load_signer(keys[0])
        done = FeedRepository(self.feed_dir).publish(runtime_dir, signer, channel=channel, rollout=rollout,
                                                     notes=notes, fmt=fmt)
        return PublishReport(done.name, done.version, done.channel, done.rollout, done.sha256, done.length,
                             done.unchanged, public_of(signer))

    def refresh(self, keys: list[Path]) -> int:
        from desktop.core.feedrepo import FeedRepository
        from desktop.core.keys import load_signer

        if not keys:
            raise UsageError("--refresh needs --key FILE")
        return FeedRepository(self.feed_dir).refresh(load_signer(keys[0]))

    def rotate_root(self, new_key: Path, keys: list[Path]) -> tuple[int, str]:
        from desktop.core.feedrepo import FeedRepository
        from desktop.core.keys import load_signer, public_of

        if not keys:
            raise UsageError("--rotate-root needs --key FILE (the current root key)")
        new = load_signer(new_key)
        return FeedRepository(self.feed_dir).rotate_root(load_signer(keys[0]), new), public_of(new)
