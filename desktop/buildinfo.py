"""build-info.json: what a frozen build is (version, platform, build id), baked in by installer/build.py.

A shell update is a complete frozen build; the build says which version it is in
`_internal/build-info.json` (next to the bundled `resources/`, i.e. `sys._MEIPASS`). The
frozen app takes its `__version__` from there, so the version of a build is a fact about
its files, not about the source it was frozen from. Standard library only: this is read
while `desktop` itself is being imported.
"""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "build-info.json"
INTERNAL_DIR = "_internal"  # PyInstaller 6's onedir contents directory
MAX_BYTES = 64 * 1024
# A version as it may name a directory: PEP 440 characters only, starting with a digit.
_VERSION_CHARS = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,63}$")
_NAME_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BuildInfoError(ValueError):
    """build-info.json is missing, unreadable or says something impossible."""


@dataclass(frozen=True)
class BuildInfo:
    """One frozen build: `executable` is the program's file name at the build's top."""

    version: str
    platform: str
    executable: str = "desktop"
    name: str = "desktop-shell"
    build: str = ""
    webengine: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "platform": self.platform,
                "executable": self.executable, "build": self.build, "webengine": self.webengine}

    @classmethod
    def from_json(cls, obj: object) -> BuildInfo:
        if not isinstance(obj, dict):
            raise BuildInfoError(f"{FILE_NAME} does not hold a JSON object")
        version, plat, exe = obj.get("version"), obj.get("platform"), obj.get("executable", "desktop")
        if not isinstance(version, str) or not _VERSION_CHARS.match(version) or ".." in version:
            raise BuildInfoError(f"{FILE_NAME}: 'version' {version!r} is not a version")
        if not isinstance(plat, str) or not _NAME_CHARS.match(plat):
            raise BuildInfoError(f"{FILE_NAME}: 'platform' {plat!r} is not a platform tag")
        if not isinstance(exe, str) or not _NAME_CHARS.match(exe):
            raise BuildInfoError(f"{FILE_NAME}: 'executable' {exe!r} is not a plain file name")
        name, build, webengine = obj.get("name", "desktop-shell"), obj.get("build", ""), obj.get("webengine", True)
        return cls(version, plat, exe, name if isinstance(name, str) else "desktop-shell",
                   build if isinstance(build, str) else "", webengine if isinstance(webengine, bool) else True)

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode()


def path_in(build_dir: Path) -> Path:
    """Where a build directory keeps its build info."""
    return Path(build_dir) / INTERNAL_DIR / FILE_NAME


def parse(data: bytes) -> BuildInfo:
    if len(data) > MAX_BYTES:
        raise BuildInfoError(f"{FILE_NAME} is larger than {MAX_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BuildInfoError(f"{FILE_NAME} is not valid JSON: {exc}") from None
    return BuildInfo.from_json(obj)


def read(build_dir: Path) -> BuildInfo:
    """The build info of a build directory (a regular file, never followed through a link)."""
    path = path_in(build_dir)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise BuildInfoError(f"no {INTERNAL_DIR}/{FILE_NAME} in the build") from None
    except OSError as exc:
        raise BuildInfoError(f"cannot read {INTERNAL_DIR}/{FILE_NAME}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildInfoError(f"{INTERNAL_DIR}/{FILE_NAME} is not a regular file")
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as exc:
        raise BuildInfoError(f"cannot read {INTERNAL_DIR}/{FILE_NAME}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return parse(data)


def platform_tag() -> str:
    """This machine's platform as builds are tagged: linux-x86_64, macos-aarch64, windows-x86_64."""
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{system}-{machine}"


def frozen_version(default: str) -> str:
    """The version of the running frozen build (its build info), else `default` (running from source)."""
    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not base:
        return default
    try:
        with open(Path(base) / FILE_NAME, "rb") as handle:
            return parse(handle.read(MAX_BYTES + 1)).version
    except (OSError, BuildInfoError):
        # A build without build info is still the source version it was frozen from.
        return default
