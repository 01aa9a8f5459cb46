"""Where things live: the data directory layout and the shipped resources."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from packaging.version import Version

APP_NAME = "desktop-shell"
DATA_DIR_ENV = "DESKTOP_DATA_DIR"
RESOURCES_ENV = "DESKTOP_RESOURCES"


def default_data_dir() -> Path:
    """The per-user data directory, from the environment or platformdirs."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resources_dir() -> Path:
    """The shipped resources: next to the package, or inside the frozen app."""
    env = os.environ.get(RESOURCES_ENV)
    if env:
        return Path(env)
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


@dataclass(frozen=True)
class DataDir:
    """The on-disk layout under one data directory.

    Version paths are always built from a parsed `Version`, never from a string taken
    from a state file or a registry, so `../../x` can never reach the disk.
    """

    root: Path

    @property
    def pointer_file(self) -> Path:
        return self.root / "current.json"

    @property
    def bad_file(self) -> Path:
        return self.root / "bad-versions.json"

    @property
    def failures_file(self) -> Path:
        return self.root / "failures.json"

    @property
    def check_file(self) -> Path:
        return self.root / "last-check.json"

    @property
    def attempt_file(self) -> Path:
        return self.root / "start-attempt.json"

    @property
    def running_file(self) -> Path:
        return self.root / "running.json"

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def install_id_file(self) -> Path:
        return self.root / "install-id"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def downloads_dir(self) -> Path:
        return self.root / "downloads"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def runtime_data_dir(self) -> Path:
        return self.root / "runtime-data"

    @property
    def stage_lock(self) -> Path:
        return self.root / "stage.lock"

    def version_dir(self, version: Version) -> Path:
        return self.versions_dir / str(version)

    def partial_dir(self, version: Version) -> Path:
        return self.versions_dir / f"{version}.partial"

    def ensure(self) -> None:
        for path in (self.root, self.versions_dir, self.downloads_dir, self.cache_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)
