"""A TUF feed served on 127.0.0.1 for tests: publish runtime versions with `desktop publish`'s code."""

from __future__ import annotations

from pathlib import Path

from desktop.core.config import AppConfig, load_config
from desktop.core.feedrepo import FeedRepository
from desktop.core.keys import generate, load_signer
from desktop.devtools import derive_runtime
from tests.support.server import LoopbackServer


class Feed:
    """A feed directory served on 127.0.0.1, its key, and helpers to publish runtime versions."""

    def __init__(self, root: Path, server: LoopbackServer, work: Path) -> None:
        self.root = root
        self.server = server
        self.work = work
        self.key = generate(work / "keys" / "feed.key")
        self.repo = FeedRepository(root)
        server.serve_directory("/feed/", root)
        self.url = f"{server.url}/feed"
        self.count = 0

    def runtime(self, version: str, **kwargs: object) -> Path:
        self.count += 1
        return derive_runtime(self.work / f"rt-{version}-{self.count}", version, **kwargs)  # type: ignore[arg-type]

    def publish(self, version: str, *, channel: str = "stable", rollout: float = 100.0, key: Path | None = None,
                **kwargs: object) -> None:
        signer = load_signer(key or self.key.private_path)
        self.repo.publish(self.runtime(version, **kwargs), signer, channel=channel, rollout=rollout,
                          notes=f"notes for {version}")

    def config(self, data: Path, **overrides: object) -> AppConfig:
        config = load_config(data_dir=data, registry=self.url, registry_kind="feed", public_key=self.key.public,
                             channel=str(overrides.pop("channel", "stable")))
        return config.with_overrides(**overrides) if overrides else config

    def target_file(self, name_part: str) -> Path:
        return next(p for p in (self.root / "targets").iterdir() if name_part in p.name)
