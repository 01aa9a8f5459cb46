"""Per-user installs for tests: fake shell builds, install roots, and the menu entry's Exec line.

A fake shell build has what a frozen one has where the launcher and the stager look
(`_internal/build-info.json`, an executable `desktop` at the top), and a `desktop` that is a
small sh script: tests decide how each version behaves (report healthy or not, exit with some
code, read stdin, sleep). Reporting healthy (HEALTHY) runs the product's own code, so the crash
records and pointer moves the launcher tests see are the real ones.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from desktop import buildinfo
from desktop.core.install.root import INSTALL_ROOT_ENV, LAUNCHER_ENV, InstallRoot
from desktop.core.publishing import Publisher

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = REPO_ROOT / "installer" / "launcher.sh"
INSTALL_SH = REPO_ROOT / "installer" / "install.sh"
UNINSTALL_SH = REPO_ROOT / "installer" / "uninstall.sh"

# sh for "this shell is healthy now": the product's own report_healthy, as the version whose
# directory the fake executable is in (records earlier crashes of the launch, commits the pointer).
_HEALTHY_CODE = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from packaging.version import Version; "
                 "from desktop.core.install import health; health.take_from_environment(); "
                 "health.report_healthy(Version(sys.argv[1]))")
HEALTHY = f'{shlex.quote(sys.executable)} -c {shlex.quote(_HEALTHY_CODE)} "$(basename "$(dirname "$0")")"'


def fake_build(directory: Path, version: str, body: str = f"{HEALTHY}\nexit 0", *,
               platform: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """A build directory whose `desktop` runs `body` (sh). The body sees "$@" and the launcher's
    environment."""
    (directory / buildinfo.INTERNAL_DIR).mkdir(parents=True)
    info = buildinfo.BuildInfo(version=version, platform=platform or buildinfo.platform_tag())
    buildinfo.path_in(directory).write_bytes(info.dumps())
    exe = directory / "desktop"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    (directory / "desktop-shell.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>\n')
    (directory / "desktop-shell.desktop").write_text(
        "[Desktop Entry]\nType=Application\nName=Desktop Shell\nExec=desktop-shell\nTryExec=desktop-shell\n"
        "Icon=desktop-shell\n")
    for rel, data in (extra or {}).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory


def publish_shell(feed_root: Path, key: Path, builds: Path, version: str, payload: bytes | None = None,
                  **options: object) -> None:
    """Publish a fake shell build of `version` to the feed in `feed_root`, signed with the private `key`."""
    build = fake_build(builds / version, version, f"echo {version}",
                       extra={"_internal/lib/payload.bin": payload or version.encode() * 1000})
    Publisher(feed_root).publish_shell(build, [key], **options)  # type: ignore[arg-type]


def make_root(root: Path, installed: str = "1.0.0", body: str = f"{HEALTHY}\nexit 0") -> Path:
    """An install root as install.sh leaves it, with the launcher and `installed` in shells/."""
    root.mkdir(parents=True)
    root.chmod(0o700)
    (root / "shells").mkdir()
    fake_build(root / "shells" / installed, installed, body)
    (root / "installed").write_text(installed + "\n")
    launcher = root / "desktop-shell"
    launcher.write_bytes(LAUNCHER.read_bytes())
    launcher.chmod(0o755)
    return root


def use_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> InstallRoot:
    """make_root(root), as this process's install root (as if started from it, not by its launcher)."""
    make_root(root)
    monkeypatch.setenv(INSTALL_ROOT_ENV, str(root))
    monkeypatch.delenv(LAUNCHER_ENV, raising=False)
    return InstallRoot(root)


def add_shell(root: Path, version: str, body: str) -> Path:
    return fake_build(root / "shells" / version, version, body)


def source_env(**extra: str) -> dict[str, str]:
    """The environment for the real CLI run from the source tree (no state of the caller's)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DESKTOP_") or k in ("DESKTOP_REGISTRY",)}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def parse_exec(value: str) -> list[str]:
    """The argv of a desktop entry's Exec value, per the Desktop Entry Specification: string escapes
    first (\\\\ \\s \\n \\t \\r), then quoted arguments (\\" \\` \\$ \\\\ inside quotes); %% is a literal %."""
    unescaped: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            unescaped.append({"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        unescaped.append(char)
        i += 1
    text = "".join(unescaped)
    argv: list[str] = []
    current: list[str] = []
    quoted = started = False
    i = 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
                current.append(text[i + 1])
                i += 2
                continue
            if char == '"':
                quoted = False
            elif char == "%" and text[i + 1: i + 2] == "%":
                current.append("%")
                i += 1
            else:
                current.append(char)
        elif char == '"':
            quoted = started = True
        elif char == " ":
            if started:
                argv.append("".join(current))
                current, started = [], False
        elif char == "%":
            if text[i + 1: i + 2] == "%":
                current.append("%")
                started = True
                i += 1
            # field codes (%f, %u, ...) expand to nothing when no file is given
            else:
                i += 1
        else:
            current.append(char)
            started = True
        i += 1
    if quoted:
        raise ValueError(f"unterminated quote in Exec={value!r}")
    if started:
        argv.append("".join(current))
    return argv


def desktop_entry_exec(entry: Path) -> list[str]:
    for line in entry.read_text().splitlines():
        if line.startswith("Exec="):
            return parse_exec(line[len("Exec="):])
    raise AssertionError(f"{entry} has no Exec line")
