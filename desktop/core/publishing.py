"""The publisher's façade: signing keys and the signed feed (the CLI's keygen/publish commands).

The feed itself is `desktop.core.publisher`; this module only turns key files into signers,
so the CLI stays parse -> one call -> render. It never invents a key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.core.errors import UsageError

if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner

    from desktop.core.publisher import ExportedRoot, FeedStatus, Published, Refreshed, RootRotated


@dataclass(frozen=True)
class KeyInfo:
    public: str
    private_path: Path
    public_path: Path


def parse_thresholds(values: list[str]) -> int | dict[str, int] | None:
    """`--threshold N` (every role) or `--threshold ROLE=N` (repeatable)."""
    if not values:
        return None
    roles = ("root", "targets", "snapshot", "timestamp")
    result: dict[str, int] = {}
    for value in values:
        role, _, number = value.rpartition("=")
        try:
            n = int(number)
        except ValueError:
            raise UsageError(f"--threshold {value!r}: expected N or ROLE=N") from None
        if n < 1:
            raise UsageError(f"--threshold {value!r}: a threshold is at least 1")
        if not role:
            if len(values) > 1:
                raise UsageError("give either one --threshold N or several --threshold ROLE=N")
            return n
        if role not in roles:
            raise UsageError(f"--threshold {value!r}: role must be one of {', '.join(roles)}")
        result[role] = n
    return result


class Publisher:
    """One feed directory and the keys that sign it."""

    def __init__(self, feed_dir: Path) -> None:
        self.feed_dir = feed_dir

    @staticmethod
    def keygen(out: Path) -> KeyInfo:
        from desktop.core.keys import generate

        pair = generate(out)
        return KeyInfo(pair.public, pair.private_path, pair.public_path)

    @staticmethod
    def _signers(keys: list[Path]) -> list[CryptoSigner]:
        from desktop.core.keys import load_signers

        if not keys and os.environ.get("DESKTOP_SIGNING_KEY"):
            keys = [Path(os.environ["DESKTOP_SIGNING_KEY"])]
        return list(load_signers(keys))

    def publish(self, runtime_dir: Path, keys: list[Path], *, channel: str = "stable", rollout: float = 100.0,
                notes: str = "", fmt: str = "tar.gz",
                thresholds: int | Mapping[str, int] | None = None) -> Published:
        from desktop.core.publisher import FeedPublisher

        return FeedPublisher(self.feed_dir).publish(runtime_dir, self._signers(keys), channel=channel,
                                                    rollout=rollout, notes=notes, fmt=fmt, thresholds=thresholds)

    def publish_shell(self, build: Path, keys: list[Path], *, channel: str = "stable", rollout: float = 100.0,
                      notes: str = "", platform: str | None = None, fmt: str = "tar.gz") -> Published:
        """Add a frozen shell build (a directory or an archive of one) to the feed as a shell target."""
        from desktop.core.install import publish as shell_publish
        from desktop.core.publisher import FeedPublisher

        signers = self._signers(keys)
        shell = shell_publish.open_build(build, platform=platform, fmt=fmt)
        custom = shell_publish.custom_facts(shell, channel=channel, rollout=rollout, notes=notes)
        return FeedPublisher(self.feed_dir).publish_artefact(shell.write, shell.name, custom, signers,
                                                             same_release=shell_publish.same_release(shell),
                                                             line=shell_publish.same_line(shell, channel))

    def refresh(self, keys: list[Path]) -> Refreshed:
        from desktop.core.publisher import FeedPublisher

        return FeedPublisher(self.feed_dir).refresh(self._signers(keys))

    def rotate_root(self, new_keys: list[Path], keys: list[Path],
                    thresholds: int | Mapping[str, int] | None = None) -> RootRotated:
        from desktop.core.keys import load_signers
        from desktop.core.publisher import FeedPublisher

        if not new_keys:
            raise UsageError("--rotate-root needs the new key file")
        return FeedPublisher(self.feed_dir).rotate_root(self._signers(keys), list(load_signers(new_keys)),
                                                        thresholds=thresholds)

    def export_root(self, out: Path) -> ExportedRoot:
        from desktop.core.publisher import export_root

        return export_root(self.feed_dir, out)

    def status(self) -> FeedStatus:
        from desktop.core.publisher import feed_status

        return feed_status(self.feed_dir)
