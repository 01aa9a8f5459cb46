"""Where things live: the data directory layout, its safety checks, and the shipped resources."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from packaging.version import Version

from desktop.core.errors import DataDirError

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
class VersionStore:
    """Where staged versions of one kind live: runtimes under the data dir, shells under the
    install root. Paths are built from a parsed `Version`, never from a string."""

    versions_dir: Path
    records_dir: Path
    downloads_dir: Path
    lock_file: Path
    pointer_file: Path

    def version_dir(self, version: Version) -> Path:
        return self.versions_dir / str(version)

    def partial_dir(self, version: Version) -> Path:
        return self.versions_dir / f"{version}.partial"

    def record_file(self, version: Version) -> Path:
        return self.records_dir / f"{version}.json"

    def files_manifest(self, version: Version) -> Path:
        """The release's file manifest as published (what a delta from this version is built against)."""
        return self.records_dir / f"{version}.files.json"

    def ensure(self) -> None:
        for path in (self.versions_dir, self.records_dir, self.downloads_dir, self.lock_file.parent):
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise DataDirError(f"cannot create {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class DataDir:
    """The on-disk layout under one data directory (an absolute path).

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
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def skipped_file(self) -> Path:
        return self.root / "skipped-versions.json"

    @property
    def integrity_file(self) -> Path:
        return self.root / "seen-integrity.json"

    @property
    def install_id_file(self) -> Path:
        return self.root / "install-id"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    @property
    def leases_dir(self) -> Path:
        return self.root / "running"

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

    @property
    def runtimes(self) -> VersionStore:
        """The staged runtime versions."""
        return VersionStore(self.versions_dir, self.records_dir, self.downloads_dir, self.stage_lock,
                            self.pointer_file)

    def version_dir(self, version: Version) -> Path:
        return self.versions_dir / str(version)

    def partial_dir(self, version: Version) -> Path:
        return self.versions_dir / f"{version}.partial"

    def record_file(self, version: Version) -> Path:
        return self.records_dir / f"{version}.json"

    def check_writable(self) -> None:
        """Raise DataDirError unless the data dir can be written to (updates and gc need it)."""
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise DataDirError(f"data dir {self.root} is read-only; updates need it writable")

    def ensure(self) -> None:
        """Create the directories a stage writes to (0700); raises DataDirError when it cannot."""
        for path in (self.root, self.versions_dir, self.records_dir, self.downloads_dir, self.cache_dir,
                     self.logs_dir):
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise DataDirError(f"cannot create {path}: {exc.strerror or exc}") from None


def open_data_dir(path: Path | str, *, create: bool = True) -> DataDir:
    """The data dir at `path` made absolute, created 0700 if missing, after the safety checks.

    Refused with DataDirError: a path that is not a directory (or under a file), a directory
    owned by another user, or one that group or others can write to (they could plant code
    that the shell would then run as this user).
    """
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    try:
        st = os.stat(root)
    except FileNotFoundError:
        if not create:
            return DataDir(root)
        try:
            os.makedirs(root, mode=0o700)
        except FileExistsError:
            pass
        except NotADirectoryError:
            raise DataDirError(f"data dir {root} cannot be created: a parent is not a directory") from None
        except OSError as exc:
            raise DataDirError(f"data dir {root} cannot be created: {exc.strerror or exc}") from None
        st = os.stat(root)
    except NotADirectoryError:
        raise DataDirError(f"data dir {root} is not usable: a parent is not a directory") from None
    except OSError as exc:
        raise DataDirError(f"data dir {root} is not usable: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirError(f"data dir {root} is not a directory")
    check_owner(root, st)
    if st.st_mode & 0o077 and hasattr(os, "geteuid"):
        # Ours and not writable by others: tighten quietly (older shells created it 0755).
        with contextlib.suppress(OSError):
            os.chmod(root, 0o700)
    return DataDir(root)


def check_owner(root: Path, st: os.stat_result) -> None:
    """Refuse a directory another user owns or others can write to."""
    if not hasattr(os, "geteuid"):
        return
    if st.st_uid != os.geteuid():
        raise DataDirError(f"data dir {root} belongs to another user (uid {st.st_uid}); refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DataDirError(f"data dir {root} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o});"
                           f" refusing to use it (chmod 700 it)")
