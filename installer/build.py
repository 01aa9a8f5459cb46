"""Build the double-clickable app (PyInstaller, onedir) with one command.

    .venv/bin/python installer/build.py [--force] [--no-webengine]

Leaves:
    dist/desktop/desktop                              the executable (GUI, CLI, runtime mode)
    dist/desktop/desktop-shell.desktop, .svg          the desktop entry and its icon
    dist/desktop/install-desktop-entry.sh             installs both for the current user
    dist/desktop-<version>-linux-<arch>.tar.gz        the distributable archive (top dir desktop/)

Steps: install PyInstaller (pinned) into the running venv if missing, build the native library
(resources/native-src/build.py), then — unless a hash of the inputs (desktop/**/*.py,
resources/**, installer/**, pyproject.toml, the Python and installed package versions) matches
the stamp of the existing dist, in which case it prints "up to date" — run PyInstaller with
installer/desktop.spec, add the desktop entry, smoke-test `desktop --version`, pack the archive
and write the stamp. `--force` rebuilds from a clean PyInstaller cache.
`--no-webengine` builds without QtWebEngine (the window shows its "Open in browser" panel).
Exit status: 0 built or up to date, 1 a step failed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALLER = ROOT / "installer"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "pyinstaller"
APP_DIR = DIST / "desktop"
EXECUTABLE = APP_DIR / ("desktop.exe" if sys.platform == "win32" else "desktop")
STAMP = DIST / ".desktop-build-stamp.json"
SPEC = INSTALLER / "desktop.spec"
NATIVE_BUILD = ROOT / "resources" / "native-src" / "build.py"
ICON = ROOT / "resources" / "icons" / "desktop.svg"
PYINSTALLER = "pyinstaller==6.22.3"
APP_ID = "desktop-shell"


def say(message: str) -> None:
    print(f"build: {message}", flush=True)


def shell_version() -> str:
    text = (ROOT / "desktop" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if not match:
        raise SystemExit("build: no __version__ in desktop/__init__.py")
    return match.group(1)


def platform_tag() -> str:
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{system}-{machine}"


def archive_path() -> Path:
    return DIST / f"desktop-{shell_version()}-{platform_tag()}.tar.gz"


def reexec_in_venv() -> None:
    """`python3 installer/build.py` works too: re-run with the project's .venv if there is one."""
    venv_python = ROOT / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if venv_python.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])


def ensure_pyinstaller() -> None:
    wanted = PYINSTALLER.split("==")[1]
    try:
        have = importlib.metadata.version("pyinstaller")
    except importlib.metadata.PackageNotFoundError:
        have = None
    if have == wanted:
        return
    say(f"installing {PYINSTALLER} into {sys.prefix} (found {have or 'none'})")
    run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", PYINSTALLER])


def run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"build: failed ({result.returncode}): {' '.join(argv)}")


def _files(base: Path, pattern: str) -> list[Path]:
    return sorted(p for p in base.glob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def input_hash(options: dict[str, object]) -> str:
    """What the build depends on: sources, resources, build scripts, the interpreter and packages."""
    digest = hashlib.sha256()
    files = (_files(ROOT / "desktop", "**/*.py") + _files(ROOT / "resources", "**/*")
             + _files(INSTALLER, "**/*") + [ROOT / "pyproject.toml"])
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    packages = sorted(f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions())
    environment = {"python": sys.version, "platform": platform_tag(), "packages": packages, "options": options}
    digest.update(json.dumps(environment, sort_keys=True).encode())
    return digest.hexdigest()


def read_stamp() -> dict[str, object]:
    try:
        data = json.loads(STAMP.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_stamp(data: dict[str, object]) -> None:
    tmp = STAMP.with_name(STAMP.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, STAMP)


def tree_size(path: Path) -> int:
    total = 0
    for base, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(base, name)).st_size
    return total


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


DESKTOP_ENTRY = """[Desktop Entry]
Type=Application
Version=1.5
Name=Desktop Shell
GenericName=Notes
Comment=Runs the Notes runtime and keeps it up to date
Exec={exec}
TryExec={exec}
Icon={app_id}
Terminal=false
Categories=Utility;
StartupNotify=true
StartupWMClass=Desktop Shell
"""

INSTALL_SCRIPT = """#!/bin/sh
# Install the desktop entry and icon of this app for the current user (no root needed):
#   ./install-desktop-entry.sh            (run from the unpacked app directory, wherever it is)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${{XDG_DATA_HOME:-$HOME/.local/share}}
mkdir -p "$data/applications" "$data/icons/hicolor/scalable/apps"
cp "$here/{app_id}.svg" "$data/icons/hicolor/scalable/apps/{app_id}.svg"
sed "s|^Exec=.*|Exec=\\"$here/desktop\\"|; s|^TryExec=.*|TryExec=$here/desktop|" \\
    "$here/{app_id}.desktop" > "$data/applications/{app_id}.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q "$data/icons/hicolor" 2>/dev/null || true
echo "installed $data/applications/{app_id}.desktop"
"""


def add_desktop_entry() -> None:
    """The freedesktop entry and icon, next to the executable (Linux)."""
    (APP_DIR / f"{APP_ID}.desktop").write_text(
        DESKTOP_ENTRY.format(exec=f"/opt/{APP_ID}/desktop", app_id=APP_ID), encoding="utf-8")
    shutil.copyfile(ICON, APP_DIR / f"{APP_ID}.svg")
    script = APP_DIR / "install-desktop-entry.sh"
    script.write_text(INSTALL_SCRIPT.format(app_id=APP_ID), encoding="utf-8")
    script.chmod(0o755)


def smoke_test(version: str) -> None:
    result = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0 or result.stdout.strip() != f"desktop {version}":
        raise SystemExit(f"build: the built app does not start: `{EXECUTABLE} --version` exited "
                         f"{result.returncode}: {(result.stdout + result.stderr).strip()[-2000:]}")


def pack(archive: Path) -> None:
    """dist/desktop -> the archive with top directory desktop/, owned by root, symlinks kept."""
    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    for old in DIST.glob("desktop-*.tar.gz"):
        old.unlink()
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(APP_DIR, arcname=APP_DIR.name, filter=normalize)
    os.replace(tmp, archive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the double-clickable app (dist/desktop/).")
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    parser.add_argument("--no-webengine", action="store_true",
                        help="leave QtWebEngine out (the window then offers 'Open in browser')")
    args = parser.parse_args(argv)
    started = time.monotonic()
    version = shell_version()
    archive = archive_path()

    ensure_pyinstaller()
    run([sys.executable, str(NATIVE_BUILD), "--quiet"])
    options = {"webengine": not args.no_webengine}
    wanted = input_hash(options)
    stamp = read_stamp()
    if (not args.force and stamp.get("hash") == wanted and EXECUTABLE.is_file()
            and archive.is_file()):
        say(f"up to date: {EXECUTABLE} ({mb(tree_size(APP_DIR))}), {archive.name} ({mb(archive.stat().st_size)}); "
            f"checked in {time.monotonic() - started:.1f} s")
        return 0

    DIST.mkdir(exist_ok=True)
    STAMP.unlink(missing_ok=True)  # an interrupted build must never look up to date
    say(f"building desktop {version} with PyInstaller ({'clean' if args.force else 'incremental'})")
    env = {**os.environ, "DESKTOP_VERSION": version}
    if args.no_webengine:
        env["DESKTOP_NO_WEBENGINE"] = "1"
    else:
        env.pop("DESKTOP_NO_WEBENGINE", None)
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
               "--distpath", str(DIST), "--workpath", str(WORK), str(SPEC)]
    if args.force:
        command.insert(3, "--clean")
    pyinstaller_started = time.monotonic()
    run(command, cwd=ROOT, env=env)
    pyinstaller_s = time.monotonic() - pyinstaller_started
    if sys.platform.startswith("linux"):
        add_desktop_entry()
    smoke_test(version)
    pack(archive)
    elapsed = time.monotonic() - started
    size, archive_size = tree_size(APP_DIR), archive.stat().st_size
    write_stamp({"hash": wanted, "version": version, "archive": archive.name, "options": options,
                 "build_seconds": round(elapsed, 1), "app_bytes": size, "archive_bytes": archive_size})
    say(f"built {EXECUTABLE}")
    say(f"build time {elapsed:.1f} s (PyInstaller {pyinstaller_s:.1f} s); "
        f"app dir {mb(size)}; {archive.name} {mb(archive_size)}")
    return 0


if __name__ == "__main__":
    reexec_in_venv()
    sys.exit(main())
