"""The admin policy: system-wide files a user cannot change that turn updates off, pin a channel, cap
versions or name the feed (and its trust).

    {
      "shell_updates": false,            the shell never updates itself (a system package's shell)
      "runtime_updates": true,           false: no runtime update is checked for or staged
      "channel": "stable",               the channel, whatever the user's settings or flags say
      "runtime_versions": "<2",          PEP 440 specifier a runtime version must satisfy
      "shell_versions": "<1.5",          ... and a shell version
      "feed": {"url": "https://updates.example.internal/feed/", "trusted_root": "/etc/desktop-shell/root.json"},
      "message": "Updates are managed by Example IT."
    }

Layers, strongest first: the admin's file (`/etc/desktop-shell/policy.json`; macOS
`/Library/Application Support/desktop-shell/policy.json`; Windows
`%ProgramData%\\desktop-shell\\policy.json`), then the one a system package ships next to the
frozen executable (`policy.json` beside it), then `DESKTOP_POLICY_FILE`. They combine so that a
later layer can only narrow what an earlier one allows: updates are off if any layer turns them
off, version specifiers intersect, and the channel and feed come from the strongest layer that
sets them. That is why the environment layer is safe to offer (tests use it): it gives a user
nothing their own flags do not, and never loosens the admin's file. A policy file that exists
but cannot be read or parsed turns updates off (fail closed) and says why.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

log = logging.getLogger(__name__)

POLICY_ENV = "DESKTOP_POLICY_FILE"
PACKAGE_POLICY_NAME = "policy.json"
MAX_POLICY_BYTES = 64 * 1024
_KNOWN = {"shell_updates", "runtime_updates", "channel", "runtime_versions", "shell_versions", "feed", "message"}


def system_policy_paths() -> tuple[Path, ...]:
    """Where an administrator puts the policy on this platform."""
    if sys.platform == "win32":
        base = os.environ.get("PROGRAMDATA", r"C:\ProgramData")
        return (Path(base) / "desktop-shell" / "policy.json",)
    if sys.platform == "darwin":
        return (Path("/Library/Application Support/desktop-shell/policy.json"),)
    return (Path("/etc/desktop-shell/policy.json"),)


def package_policy_path() -> Path | None:
    """The policy a system package ships next to the frozen executable (none when running from source)."""
    if not getattr(sys, "frozen", False):
        return None
    return Path(os.path.realpath(sys.executable)).parent / PACKAGE_POLICY_NAME


@dataclass(frozen=True)
class FeedPin:
    """The feed the policy requires, and how to trust it."""

    url: str
    kind: str = "feed"
    trusted_root: Path | None = None
    public_key: str | None = None


@dataclass(frozen=True)
class AdminPolicy:
    """The combined policy in force (the defaults: nothing restricted)."""

    shell_updates: bool = True
    runtime_updates: bool = True
    channel: str | None = None
    runtime_versions: SpecifierSet | None = None
    shell_versions: SpecifierSet | None = None
    feed: FeedPin | None = None
    message: str = ""
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def in_force(self) -> bool:
        return bool(self.sources or self.problems)

    def describe(self) -> str:
        """One line for the window's status: what the policy does, and the admin's message."""
        if not self.in_force:
            return ""
        parts: list[str] = []
        if self.problems:
            parts.append(f"updates are off: {self.problems[0]}")
        else:
            if not self.shell_updates and not self.runtime_updates:
                parts.append("updates are turned off")
            elif not self.shell_updates:
                parts.append("the app's own updates are turned off")
            elif not self.runtime_updates:
                parts.append("runtime updates are turned off")
            if self.channel:
                parts.append(f"channel {self.channel}")
            if self.runtime_versions:
                parts.append(f"runtime {self.runtime_versions}")
            if self.shell_versions:
                parts.append(f"app {self.shell_versions}")
            if self.feed:
                parts.append("updates come from your organisation's feed")
        text = "Managed by policy: " + ("; ".join(parts) or "no restrictions")
        return f"{text}. {self.message}" if self.message else text


@dataclass(frozen=True)
class _Layer:
    source: str
    shell_updates: bool = True
    runtime_updates: bool = True
    channel: str | None = None
    runtime_versions: SpecifierSet | None = None
    shell_versions: SpecifierSet | None = None
    feed: FeedPin | None = None
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


class PolicyFileError(ValueError):
    """A policy file exists but cannot be used."""


def _read(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise PolicyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PolicyFileError(f"{path} is not a regular file")
        data = os.read(fd, MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyFileError(f"{path} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PolicyFileError(f"{path} does not hold a JSON object")
    return obj


def _flag(obj: dict[str, Any], key: str, path: Path) -> bool:
    value = obj.get(key, True)
    if not isinstance(value, bool):
        raise PolicyFileError(f"{path}: {key!r} must be true or false")
    return value


def _specifier(obj: dict[str, Any], key: str, path: Path) -> SpecifierSet | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PolicyFileError(f"{path}: {key!r} must be a version specifier such as \"<2.0\"")
    try:
        return SpecifierSet(value)
    except InvalidSpecifier:
        raise PolicyFileError(f"{path}: {key!r} is not a version specifier: {value!r}") from None


def _feed(obj: dict[str, Any], path: Path) -> FeedPin | None:
    value = obj.get("feed")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("url"), str) or not value["url"]:
        raise PolicyFileError(f"{path}: 'feed' must be an object with a 'url'")
    kind = value.get("kind", "feed")
    if kind not in ("feed", "npm"):
        raise PolicyFileError(f"{path}: feed 'kind' must be \"feed\" or \"npm\"")
    root = value.get("trusted_root")
    key = value.get("public_key")
    if root is not None and (not isinstance(root, str) or not os.path.isabs(root)):
        raise PolicyFileError(f"{path}: feed 'trusted_root' must be an absolute path")
    if key is not None and not isinstance(key, str):
        raise PolicyFileError(f"{path}: feed 'public_key' must be a string")
    if kind == "feed" and root is None and key is None:
        raise PolicyFileError(f"{path}: a feed needs its 'trusted_root' (or 'public_key') to be trusted")
    return FeedPin(value["url"], kind, Path(root) if root else None, key)


def parse_layer(obj: dict[str, Any], path: Path) -> _Layer:
    channel = obj.get("channel")
    if channel is not None and (not isinstance(channel, str) or not channel or len(channel) > 64):
        raise PolicyFileError(f"{path}: 'channel' must be a channel name")
    message = obj.get("message", "")
    if not isinstance(message, str):
        raise PolicyFileError(f"{path}: 'message' must be a string")
    unknown = sorted(set(obj) - _KNOWN)
    return _Layer(str(path), _flag(obj, "shell_updates", path), _flag(obj, "runtime_updates", path), channel,
                  _specifier(obj, "runtime_versions", path), _specifier(obj, "shell_versions", path),
                  _feed(obj, path), message[:500],
                  tuple(f"{path}: unknown setting {name!r} ignored" for name in unknown))


def _intersect(a: SpecifierSet | None, b: SpecifierSet | None) -> SpecifierSet | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def load_policy(paths: Sequence[Path] | None = None) -> AdminPolicy:
    """The policy in force: `paths` strongest first (default: the admin's file, the package's, then
    DESKTOP_POLICY_FILE). Never raises: an unusable file turns updates off and says why."""
    if paths is None:
        chosen: list[Path] = list(system_policy_paths())
        package = package_policy_path()
        if package is not None:
            chosen.append(package)
        extra = os.environ.get(POLICY_ENV)
        if extra:
            chosen.append(Path(extra))
        paths = chosen
    layers: list[_Layer] = []
    problems: list[str] = []
    for path in paths:
        try:
            obj = _read(path)
            if obj is not None:
                layers.append(parse_layer(obj, path))
        except PolicyFileError as exc:
            log.warning("admin policy: %s; updates are off until it is fixed", exc)
            problems.append(str(exc))
    for layer in layers:
        for warning in layer.warnings:
            log.warning("admin policy: %s", warning)
    if not layers and not problems:
        return AdminPolicy()
    versions: SpecifierSet | None = None
    shells: SpecifierSet | None = None
    for layer in layers:
        versions = _intersect(versions, layer.runtime_versions)
        shells = _intersect(shells, layer.shell_versions)
    return AdminPolicy(
        shell_updates=not problems and all(layer.shell_updates for layer in layers),
        runtime_updates=not problems and all(layer.runtime_updates for layer in layers),
        channel=next((layer.channel for layer in layers if layer.channel), None),
        runtime_versions=versions,
        shell_versions=shells,
        feed=next((layer.feed for layer in layers if layer.feed), None),
        message=next((layer.message for layer in layers if layer.message), ""),
        sources=tuple(layer.source for layer in layers),
        problems=tuple(problems),
    )
