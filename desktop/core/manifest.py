"""runtime.json: the runtime package contract, and verification of a version directory."""

from __future__ import annotations

import json
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from desktop.core.errors import HostGateError, ManifestError, NativeDepError
from desktop.core.records import file_sha256
from desktop.core.tree import walk
from desktop.core.versions import admits, parse_version

MANIFEST_NAME = "runtime.json"
MAX_MANIFEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class RuntimeManifest:
    """What runtime.json says about a runtime package."""

    name: str
    version: Version
    entry: str
    command: tuple[str, ...]
    native: tuple[str, ...]
    requires_shell: str | None
    simulate: str | None = None

    @classmethod
    def load(cls, directory: Path) -> RuntimeManifest:
        path = directory / MANIFEST_NAME
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise ManifestError(f"no {MANIFEST_NAME} in the runtime package") from None
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(f"{MANIFEST_NAME} is not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            obj = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"{MANIFEST_NAME} does not hold a JSON object")
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> RuntimeManifest:
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise ManifestError("runtime.json: 'name' must be a non-empty string")
        version = parse_version(obj.get("version"))
        if version is None:
            raise ManifestError(f"runtime.json: 'version' {obj.get('version')!r} is not a valid version")
        entry = obj.get("entry")
        if not isinstance(entry, str) or not _is_safe_relative(entry):
            raise ManifestError(f"runtime.json: 'entry' {entry!r} must be a relative path inside the package")
        command = obj.get("command", ["{python}", "{entry}"])
        if (not isinstance(command, list) or not command
                or not all(isinstance(part, str) for part in command)):
            raise ManifestError("runtime.json: 'command' must be a non-empty list of strings")
        native = obj.get("native", [])
        if not isinstance(native, list) or not all(
                isinstance(n, str) and _is_safe_name(n) for n in native):
            raise ManifestError("runtime.json: 'native' must be a list of plain names")
        requires = obj.get("requires_shell")
        if requires is not None and not isinstance(requires, str):
            raise ManifestError("runtime.json: 'requires_shell' must be a string")
        simulate = obj.get("simulate")
        return cls(
            name=name,
            version=version,
            entry=entry,
            command=tuple(str(part) for part in command),
            native=tuple(native),
            requires_shell=requires,
            simulate=simulate if isinstance(simulate, str) else None,
        )


def _is_safe_relative(path: str) -> bool:
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return False
    parts = posixpath.normpath(path).split("/")
    return ".." not in parts and parts != ["."]


def _is_safe_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\x00")


def _tree_signature(path: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (size or -1 for dirs, sha256 or link target) for a file or tree."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return {".": (0, "link:" + os.readlink(path))}
    if stat.S_ISREG(st.st_mode):
        return {".": (st.st_size, file_sha256(path))}
    if not stat.S_ISDIR(st.st_mode):
        return {".": (-2, "special")}
    result: dict[str, tuple[int, str]] = {".": (-1, "")}
    for entry in walk(path):
        if entry.is_link:
            result[entry.rel] = (0, "link:" + os.readlink(entry.path))
        elif entry.is_dir:
            result[entry.rel] = (-1, "")
        elif entry.is_file:
            result[entry.rel] = (entry.st.st_size, file_sha256(entry.path))
        else:
            result[entry.rel] = (-2, "special")
    return result


def native_matches(bundled: Path, staged: Path) -> bool:
    """Whether a staged native dependency is byte-identical to the bundled copy."""
    try:
        return _tree_signature(bundled) == _tree_signature(staged)
    except OSError:
        return False


def verify_version_dir(
    directory: Path,
    *,
    expected: Version | None,
    shell_version: str,
    native_root: Path,
) -> RuntimeManifest:
    """Check a runtime directory is launchable; raise an InvalidReleaseError saying why not.

    The check reads the manifest, the entry's metadata and the native dependencies
    (small, hashed); it never walks the whole runtime, so it stays cheap at launch.
    """
    manifest = validate_package(directory)
    if expected is not None and manifest.version != expected:
        raise ManifestError(f"runtime.json says version {manifest.version}, expected {expected}")
    if not admits(manifest.requires_shell, shell_version):
        raise HostGateError(
            f"version {manifest.version} requires shell {manifest.requires_shell}, this is {shell_version}")
    for name in manifest.native:
        bundled = native_root / name
        if not bundled.exists():
            raise NativeDepError(f"native dependency {name!r} is not bundled with this shell")
        if not native_matches(bundled, directory / name):
            raise NativeDepError(f"native dependency {name!r} is missing or differs from the bundled copy")
    return manifest


def validate_package(directory: Path) -> RuntimeManifest:
    """The checks a runtime package must pass before anything else: manifest and entry point."""
    manifest = RuntimeManifest.load(directory)
    entry = directory / manifest.entry
    try:
        entry_stat = entry.lstat()
    except OSError:
        raise ManifestError(f"entry point {manifest.entry} is missing") from None
    if not stat.S_ISREG(entry_stat.st_mode):
        raise ManifestError(f"entry point {manifest.entry} is not a regular file")
    real_root = directory.resolve()
    if not entry.resolve().is_relative_to(real_root):
        raise ManifestError(f"entry point {manifest.entry} lies outside the runtime")
    return manifest
