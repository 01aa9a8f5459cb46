"""`desktop publish-shell BUILD --feed DIR --key K`: a frozen build onto the signed feed.

BUILD is a build directory (dist/desktop-shell, packed reproducibly here) or an archive of
one (.tar.gz or .zip, published as is: the bytes a pipeline tested are the bytes users get).
Either way its `_internal/build-info.json` says the version and the platform; the target's
custom metadata carries {kind: "shell", version, platform, channel, rollout, notes,
unpacked_size}. Runtime clients ignore shell targets; shell clients take only their platform's.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop import buildinfo
from desktop.core import pack
from desktop.core.archive import detect_format
from desktop.core.errors import InvalidReleaseError, ManifestError, UsageError
from desktop.core.install.artefact import verify_build
from desktop.core.tree import tree_size

SHELL_FORMATS = ("tar.gz", "zip")
# A shell build is hundreds of MB: level 6 packs it 2.5x faster than 9 for 0.5 % more bytes.
COMPRESS_LEVEL = 6


@dataclass(frozen=True)
class ShellBuild:
    """A build ready to publish: what it is, how to write its archive, and the target's name."""

    info: buildinfo.BuildInfo
    version: Version
    fmt: str
    unpacked_size: int
    write: Callable[[Path], None]

    @property
    def name(self) -> str:
        return f"desktop-shell-{self.version}-{self.info.platform}.{self.fmt}"


def open_build(build: Path, *, platform: str | None = None, fmt: str = "tar.gz") -> ShellBuild:
    """Check a build directory or archive; raises UsageError or an InvalidReleaseError saying why not."""
    build = Path(build)
    if build.is_dir():
        if fmt not in SHELL_FORMATS:
            raise UsageError(f"a shell is published as {' or '.join(SHELL_FORMATS)}, not {fmt}")
        try:
            info = buildinfo.read(build)
        except buildinfo.BuildInfoError as exc:
            raise ManifestError(f"{build} is not a shell build: {exc}") from None
        verify_build(build, expected=None, platform=info.platform)
        _, size = tree_size(build)
        version = Version(info.version)
        wrap = f"desktop-shell-{version}"

        def write_packed(out: Path) -> None:
            pack.pack_directory(build, out, fmt, wrap=wrap, level=COMPRESS_LEVEL)

        shell = ShellBuild(info, version, fmt, size, write_packed)
    elif build.is_file():
        shell = _open_archive(build)
    else:
        raise UsageError(f"{build} is neither a build directory nor an archive of one")
    if platform is not None and platform != shell.info.platform:
        raise UsageError(f"{build} is a build for {shell.info.platform}, not {platform}")
    return shell


def _open_archive(path: Path) -> ShellBuild:
    fmt = detect_format(path)
    if fmt not in SHELL_FORMATS:
        raise UsageError(f"publish a shell from its directory or a {' or '.join(SHELL_FORMATS)} of it, not {fmt}")
    members: dict[str, tuple[bool, int, int]] = {}  # name -> (regular file, mode, size)
    data: dict[str, bytes] = {}

    def wanted(name: str) -> bool:
        return name.endswith("/" + buildinfo.INTERNAL_DIR + "/" + buildinfo.FILE_NAME) or \
            name == f"{buildinfo.INTERNAL_DIR}/{buildinfo.FILE_NAME}"

    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                for item in zf.infolist():
                    name = _clean(item.filename)
                    mode = item.external_attr >> 16
                    regular = not item.is_dir() and (stat.S_IFMT(mode) in (0, stat.S_IFREG))
                    members[name] = (regular, mode, item.file_size)
                    if regular and wanted(name) and item.file_size <= buildinfo.MAX_BYTES:
                        data[name] = zf.read(item)
        else:
            with tarfile.open(path, "r|gz") as tf:
                for member in tf:
                    name = _clean(member.name)
                    members[name] = (member.isfile(), member.mode, member.size)
                    if member.isfile() and wanted(name) and member.size <= buildinfo.MAX_BYTES:
                        handle = tf.extractfile(member)
                        if handle is not None:
                            data[name] = handle.read()
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise InvalidReleaseError(f"{path} cannot be read as {fmt}: {exc}") from None
    tops = {name.split("/", 1)[0] for name in members}
    prefix = f"{next(iter(tops))}/" if len(tops) == 1 and not members.get(next(iter(tops)), (False,))[0] else ""
    raw = data.get(f"{prefix}{buildinfo.INTERNAL_DIR}/{buildinfo.FILE_NAME}")
    if raw is None:
        raise ManifestError(f"{path} holds no {buildinfo.INTERNAL_DIR}/{buildinfo.FILE_NAME}: not a shell build")
    try:
        info = buildinfo.parse(raw)
    except buildinfo.BuildInfoError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    regular, mode, _ = members.get(prefix + info.executable, (False, 0, 0))
    if not regular or not mode & stat.S_IXUSR:
        raise ManifestError(f"{path} has no executable {info.executable!r} at the top of the build")
    size = sum(size for regular, _, size in members.values() if regular)

    def write_copy(out: Path) -> None:
        shutil.copyfile(path, out)

    return ShellBuild(info, Version(info.version), fmt, size, write_copy)


def _clean(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if not name or name.startswith("/") or ".." in posixpath.normpath(name).split("/"):
        raise InvalidReleaseError(f"unsafe member name {name!r} in the shell archive")
    return name


def custom_facts(shell: ShellBuild, *, channel: str, rollout: float, notes: str) -> dict[str, Any]:
    if not 0 <= rollout <= 100:
        raise UsageError("rollout must be a percentage between 0 and 100")
    return {
        "kind": "shell",
        "version": str(shell.version),
        "platform": shell.info.platform,
        "channel": channel,
        # Canonical JSON (what TUF signs) has no floats.
        "rollout": int(rollout) if float(rollout).is_integer() else f"{rollout:g}",
        "notes": notes,
        "unpacked_size": shell.unpacked_size,
    }


def same_release(shell: ShellBuild) -> Callable[[Mapping[str, Any]], bool]:
    def same(custom: Mapping[str, Any]) -> bool:
        return (custom.get("kind") == "shell" and str(custom.get("version")) == str(shell.version)
                and custom.get("platform") == shell.info.platform)
    return same


def same_line(shell: ShellBuild, channel: str) -> Callable[[Mapping[str, Any]], bool]:
    """Shell releases a client of this build's platform and `channel` may have (delta bases)."""
    def same(custom: Mapping[str, Any]) -> bool:
        return (custom.get("kind") == "shell" and custom.get("platform") == shell.info.platform
                and custom.get("channel", "stable") == channel)
    return same
