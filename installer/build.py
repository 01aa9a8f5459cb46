"""Build the double-clickable app and its packages (PyInstaller, onedir) with one command.

    .venv/bin/python installer/build.py [--force] [--no-webengine]

Leaves in dist/:
    desktop-shell/                                 the frozen build: `desktop` (GUI, CLI, runtime mode),
                                                   _internal/ (with build-info.json), desktop-shell.desktop, .svg
    desktop-shell-<version>-linux-<arch>.tar.gz    the per-user archive: install.sh, uninstall.sh,
                                                   launcher.sh and shell/ (the build), under one top
                                                   directory of the same name
    desktop-shell_<version>_<debian-arch>.deb      the system package (dpkg-deb; Linux)

Steps: install PyInstaller (pinned) into the running venv if missing, build the native library
(resources/native-src/build.py), then — unless a hash of the inputs (desktop/**/*.py,
resources/**, installer/**, pyproject.toml, the Python and installed package versions) matches
the stamp of the existing dist, in which case it prints "up to date" — run PyInstaller with
installer/desktop.spec, write the build info, add the desktop entry, smoke-test
`desktop --version`, pack the archive and the .deb (in parallel) and write the stamp. `--force`
rebuilds from a clean PyInstaller cache. `--no-webengine` builds without QtWebEngine (the window
shows its "Open in browser" panel). Exit status: 0 built or up to date, 1 a step failed.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from desktop import buildinfo  # noqa: E402  (stdlib only: importable before the venv check)

INSTALLER = ROOT / "installer"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "pyinstaller"
DEB_WORK = ROOT / "build" / "deb"
APP_DIR = DIST / "desktop-shell"  # never a folder named `desktop` next to the user's Desktop
EXECUTABLE_NAME = "desktop.exe" if sys.platform == "win32" else "desktop"
EXECUTABLE = APP_DIR / EXECUTABLE_NAME
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
    return buildinfo.platform_tag()


def archive_top() -> str:
    return f"{APP_ID}-{shell_version()}-{platform_tag()}"


def archive_path() -> Path:
    return DIST / f"{archive_top()}.tar.gz"


def deb_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def deb_path() -> Path:
    return DIST / f"{APP_ID}_{shell_version()}_{deb_arch()}.deb"


def wants_deb() -> bool:
    return sys.platform.startswith("linux") and shutil.which("dpkg-deb") is not None


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
# The package manager owns a system install's files: the shell must not try to replace itself.
PACKAGE_POLICY = {"shell_updates": False,
                  "message": "Desktop Shell itself is updated by your system's package manager."}
DEB_DEPENDS = ("libc6 (>= 2.31), libegl1, libgl1, libxkbcommon0, libfontconfig1, libfreetype6, libdbus-1-3, "
               "libglib2.0-0, libx11-xcb1, libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, libnss3")
ARCHIVE_README = """Desktop Shell {version} for {platform}

  ./install.sh      install it for yourself (no root needed): the app goes to
                    ~/.local/share/desktop-shell-app, with a menu entry; it then updates itself
  ./uninstall.sh    remove it again (your data stays unless --purge)

shell/ is the app itself; shell/desktop runs it without installing (no self-update then).
"""


def write_build_info(version: str, build_id: str, webengine: bool) -> None:
    """_internal/build-info.json: the version of this build is a fact about its files."""
    info = buildinfo.BuildInfo(version=version, platform=platform_tag(), executable=EXECUTABLE_NAME,
                               build=build_id, webengine=webengine)
    buildinfo.path_in(APP_DIR).write_bytes(info.dumps())


def add_desktop_entry() -> None:
    """The freedesktop entry and icon at the top of the build (install.sh and the .deb set Exec)."""
    (APP_DIR / f"{APP_ID}.desktop").write_text(DESKTOP_ENTRY.format(exec=APP_ID, app_id=APP_ID), encoding="utf-8")
    shutil.copyfile(ICON, APP_DIR / f"{APP_ID}.svg")


def smoke_test(version: str) -> None:
    result = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0 or result.stdout.strip() != f"desktop {version}":
        raise SystemExit(f"build: the built app does not start: `{EXECUTABLE} --version` exited "
                         f"{result.returncode}: {(result.stdout + result.stderr).strip()[-2000:]}")


def pack(archive: Path, version: str) -> None:
    """The per-user archive: <top>/install.sh, uninstall.sh, launcher.sh, README.txt and shell/ (the build)."""
    top = archive_top()

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if not info.issym():
            info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    tmp = archive.with_name(archive.name + ".tmp")
    readme = DEB_WORK.parent / "README.txt"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(ARCHIVE_README.format(version=version, platform=platform_tag()), encoding="utf-8")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(str(DIST), arcname=top, recursive=False, filter=normalize)
        for script in ("install.sh", "uninstall.sh", "launcher.sh"):
            info = tar.gettarinfo(INSTALLER / script, arcname=f"{top}/{script}")
            info = normalize(info)
            info.mode = 0o755  # whatever the checkout's modes: these are run
            with open(INSTALLER / script, "rb") as handle:
                tar.addfile(info, handle)
        tar.add(readme, arcname=f"{top}/README.txt", filter=normalize)
        tar.add(APP_DIR, arcname=f"{top}/shell", filter=normalize)
    os.replace(tmp, archive)


def build_deb(out: Path, version: str) -> None:
    """A system package: /usr/lib/desktop-shell (the build and a policy that turns self-update off),
    /usr/bin/desktop-shell, the menu entry and icon. Built with dpkg-deb, files owned by root."""
    stage = DEB_WORK / "root"
    shutil.rmtree(DEB_WORK, ignore_errors=True)
    lib = stage / "usr" / "lib" / APP_ID
    shutil.copytree(APP_DIR, lib, symlinks=True, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(f"{APP_ID}.desktop", f"{APP_ID}.svg"))
    (lib / "policy.json").write_text(json.dumps(PACKAGE_POLICY, indent=2) + "\n", encoding="utf-8")
    (stage / "usr" / "bin").mkdir(parents=True)
    os.symlink(f"../lib/{APP_ID}/{EXECUTABLE_NAME}", stage / "usr" / "bin" / APP_ID)
    apps = stage / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    (apps / f"{APP_ID}.desktop").write_text(DESKTOP_ENTRY.format(exec=f"/usr/bin/{APP_ID}", app_id=APP_ID),
                                            encoding="utf-8")
    icons = stage / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    icons.mkdir(parents=True)
    shutil.copyfile(ICON, icons / f"{APP_ID}.svg")
    doc = stage / "usr" / "share" / "doc" / APP_ID
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: {APP_ID}\n\nFiles: *\nCopyright: 2026 The Desktop Shell authors\nLicense: proprietary\n"
        " All rights reserved.\n", encoding="utf-8")
    _write_gzip(doc / "changelog.gz", f"{APP_ID} ({version}) stable; urgency=medium\n\n  * Release {version}.\n\n"
                " -- Desktop Shell maintainers <maintainers@desktop-shell.invalid>  "
                "Sat, 01 Jan 2000 00:00:00 +0000\n")
    man = stage / "usr" / "share" / "man" / "man1"
    man.mkdir(parents=True)
    _write_gzip(man / f"{APP_ID}.1.gz", MAN_PAGE)
    for base, dirs, files in os.walk(stage):
        for name in dirs:
            os.chmod(os.path.join(base, name), 0o755)
        for name in files:
            path = os.path.join(base, name)
            if not os.path.islink(path):
                mode = os.lstat(path).st_mode & 0o7777
                wanted = 0o755 if mode & 0o111 else 0o644
                if mode != wanted:  # hard links: the build's own file has the same mode
                    os.chmod(path, wanted)
    size_kb = sum(os.lstat(os.path.join(b, f)).st_size for b, _, fs in os.walk(stage) for f in fs) // 1024 + 1
    control = stage / "DEBIAN"
    control.mkdir(mode=0o755)
    (control / "control").write_text(
        f"Package: {APP_ID}\nVersion: {version}\nArchitecture: {deb_arch()}\n"
        "Maintainer: Desktop Shell maintainers <maintainers@desktop-shell.invalid>\n"
        f"Installed-Size: {size_kb}\nDepends: {DEB_DEPENDS}\nSection: utils\nPriority: optional\n"
        "Description: desktop shell that runs and updates an embedded runtime\n"
        " Desktop Shell starts a local runtime (a web app, a language server, an\n"
        " agent) in a window and keeps the runtime up to date from a signed feed,\n"
        " falling back to the last version that worked when a new one fails to\n"
        " start. In this system install the package manager updates the app\n"
        " itself; runtimes still update for each user.\n",
        encoding="utf-8")
    os.chmod(control / "control", 0o644)
    tmp = out.with_name(out.name + ".tmp")
    # gzip: every dpkg reads it (zstd is 6x faster but older dpkg and lintian refuse it; xz takes
    # minutes on 500 MB for 3 % less), and it runs while the archive is packed.
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", str(stage), str(tmp)])
    os.replace(tmp, out)
    shutil.rmtree(DEB_WORK, ignore_errors=True)


MAN_PAGE = """.TH DESKTOP-SHELL 1
.SH NAME
desktop-shell \\- desktop shell that runs and updates an embedded runtime
.SH SYNOPSIS
.B desktop-shell
[\\fICOMMAND\\fR] [\\fIOPTIONS\\fR]
.SH DESCRIPTION
Without a command, starts the app window. \\fBdesktop-shell --help\\fR lists the headless
commands (status, check, update, launch, rollback, bad, gc, keygen, publish, publish-shell).
In this system install the package manager updates the app itself; runtimes update for each user.
"""


def _write_gzip(path: Path, text: str) -> None:
    import gzip

    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def remove_old_outputs() -> None:
    """Earlier layouts and versions: dist/desktop/, desktop-*.tar.gz, stale archives and packages."""
    shutil.rmtree(DIST / "desktop", ignore_errors=True)
    for pattern in ("desktop-*.tar.gz", f"{APP_ID}-*.tar.gz", f"{APP_ID}_*.deb", "*.tmp"):
        for old in DIST.glob(pattern):
            if old.is_file():
                old.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the double-clickable app and its packages (dist/).")
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    parser.add_argument("--no-webengine", action="store_true",
                        help="leave QtWebEngine out (the window then offers 'Open in browser')")
    args = parser.parse_args(argv)
    started = time.monotonic()
    version = shell_version()
    archive = archive_path()
    deb = deb_path() if wants_deb() else None

    ensure_pyinstaller()
    run([sys.executable, str(NATIVE_BUILD), "--quiet"])
    options = {"webengine": not args.no_webengine}
    wanted = input_hash(options)
    stamp = read_stamp()
    if (not args.force and stamp.get("hash") == wanted and EXECUTABLE.is_file()
            and archive.is_file() and (deb is None or deb.is_file())):
        say(f"up to date: {EXECUTABLE} ({mb(tree_size(APP_DIR))}), {archive.name} ({mb(archive.stat().st_size)})"
            + (f", {deb.name} ({mb(deb.stat().st_size)})" if deb else "")
            + f"; checked in {time.monotonic() - started:.1f} s")
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
    write_build_info(version, wanted[:16], not args.no_webengine)
    if sys.platform.startswith("linux"):
        add_desktop_entry()
    smoke_test(version)
    remove_old_outputs()
    packing_started = time.monotonic()
    failures: list[BaseException] = []

    def package() -> None:
        try:
            if deb is not None:
                build_deb(deb, version)
        except BaseException as exc:  # re-raised on the main thread below
            failures.append(exc)

    # The .deb (dpkg-deb's gzip) and the archive (Python's gzip) each keep one core busy.
    packager = threading.Thread(target=package, name="deb")
    packager.start()
    try:
        pack(archive, version)
    finally:
        packager.join()
    if failures:
        raise failures[0]
    packing_s = time.monotonic() - packing_started
    elapsed = time.monotonic() - started
    size, archive_size = tree_size(APP_DIR), archive.stat().st_size
    deb_size = deb.stat().st_size if deb is not None else None
    write_stamp({"hash": wanted, "version": version, "archive": archive.name, "options": options,
                 "deb": deb.name if deb is not None else None, "deb_bytes": deb_size,
                 "build_seconds": round(elapsed, 1), "app_bytes": size, "archive_bytes": archive_size})
    say(f"built {EXECUTABLE}")
    say(f"build time {elapsed:.1f} s (PyInstaller {pyinstaller_s:.1f} s, packing {packing_s:.1f} s); "
        f"app dir {mb(size)}; {archive.name} {mb(archive_size)}"
        + (f"; {deb.name} {mb(deb_size)}" if deb is not None and deb_size is not None else ""))
    return 0


if __name__ == "__main__":
    reexec_in_venv()
    sys.exit(main())
