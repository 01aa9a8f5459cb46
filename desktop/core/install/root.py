"""The per-user install root: where it is, what is in it, and whether this process runs from it."""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from packaging.version import Version

from desktop.core.paths import VersionStore
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

ROOT_DIR_NAME = "desktop-shell-app"  # not the data dir (desktop-shell), which has its own contract
LAUNCHER_NAME = "desktop-shell"
INSTALL_ROOT_ENV = "DESKTOP_INSTALL_ROOT"  # set by the launcher for the shell it starts
HEALTH_MARK_ENV = "DESKTOP_HEALTH_MARK"  # the file the shell writes once it is healthy
LAUNCHER_ENV = "DESKTOP_LAUNCHER"  # the launcher that started this shell: it can restart it
# A healthy shell exiting with this code asks the launcher to start the pointer's shell again
# ("Restart to update"). Chosen outside the codes the CLI, Python and signals use.
RESTART_EXIT_CODE = 85
MAX_INSTALLED_BYTES = 256


def default_install_root() -> Path:
    """${XDG_DATA_HOME:-~/.local/share}/desktop-shell-app on Linux (the platform's per-user program place)."""
    return Path(platformdirs.user_data_dir(ROOT_DIR_NAME, appauthor=False))


@dataclass(frozen=True)
class InstallRoot:
    """The files of one per-user install (see the package docstring for the layout)."""

    root: Path

    @property
    def shells_dir(self) -> Path:
        return self.root / "shells"

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
    def installed_file(self) -> Path:
        return self.root / "installed"

    @property
    def health_dir(self) -> Path:
        return self.root / "health"

    @property
    def launcher(self) -> Path:
        return self.root / LAUNCHER_NAME

    @property
    def store(self) -> VersionStore:
        """The staged shells, for the generic stager."""
        return VersionStore(self.shells_dir, self.root / "records", self.root / "downloads",
                            self.root / "stage.lock", self.pointer_file)

    def shell_dir(self, version: Version) -> Path:
        return self.shells_dir / str(version)

    def installed_version(self) -> Version | None:
        """The version install.sh put in place (the fallback of last resort, never marked bad)."""
        try:
            fd = os.open(self.installed_file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = os.read(fd, MAX_INSTALLED_BYTES).decode("ascii", "replace").strip()
        except OSError:
            return None
        finally:
            os.close(fd)
        return parse_version(text) if text else None

    def is_safe(self) -> str | None:
        """Why this root must not be used (another user's, or writable by others), or None."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            return f"{self.root} cannot be used: {exc.strerror or exc}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{self.root} is not a directory"
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            return f"{self.root} belongs to another user (uid {st.st_uid})"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{self.root} is writable by group or others"
        return None


def running_from(root: Path, executable: str | None = None) -> Version | None:
    """The shell version this process runs, if its executable lies in `root`/shells/<v>/."""
    exe = Path(os.path.realpath(executable or sys.executable))
    try:
        rel = exe.relative_to(os.path.realpath(root))
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) >= 3 and parts[0] == "shells":
        version = parse_version(parts[1])
        return version if version is not None and str(version) == parts[1] else None
    return None


def find_install_root() -> InstallRoot | None:
    """The install root this shell belongs to: the launcher's, else the one its frozen executable is in.

    A shell running from source, from an unpacked archive or from a system package has none:
    it cannot update itself (its files belong to someone else).
    """
    env = os.environ.get(INSTALL_ROOT_ENV)
    candidate: Path | None = None
    if env:
        candidate = Path(os.path.abspath(os.path.expanduser(env)))
    elif getattr(sys, "frozen", False):
        exe = Path(os.path.realpath(sys.executable))
        if exe.parent.parent.name == "shells":
            candidate = exe.parent.parent.parent
    if candidate is None:
        return None
    install = InstallRoot(candidate)
    if not install.installed_file.is_file():
        return None
    problem = install.is_safe()
    if problem is not None:
        log.warning("not using the install root: %s", problem)
        return None
    return install
