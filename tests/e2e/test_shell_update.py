"""The installed app updates itself: install shell 1.0.0 per user from the built archive, let it stage
shell 1.1.0 and then the runtime that needs it, then survive a shell 1.2.0 (which arrives as a delta
from 1.1.0) that crashes at startup.

Everything runs through the installed launcher as the menu entry's Exec line starts it (headless
commands, and one offscreen GUI start), in a temporary HOME. Shells 1.1.0 and 1.2.0 are derived
from the one cached build: hard links to its files, a new `_internal/build-info.json`, and for
1.2.0 an emptied libpython (the bootloader cannot start Python: a real crash, no test hook). They
are published as stored zips (`desktop publish-shell ARCHIVE`): packing 500 MB with gzip takes a
minute here and tests nothing more; the real packer's size is measured in the README.

    .venv/bin/pytest -m e2e tests/e2e/test_shell_update.py -q -s
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from desktop import buildinfo
from desktop.core.tree import walk
from tests.support.built_app import DIST, REPO_ROOT, SHELL_VERSION, accent_pixels, app_env
from tests.support.feed import Feed
from tests.support.installs import desktop_entry_exec
from tests.support.server import LoopbackServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux build is tested here")]


@dataclass
class Installed:
    home: Path
    root: Path
    exec_argv: list[str]
    feed: Feed
    work: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = app_env(HOME=str(self.home), **extra)
        env.pop("XDG_DATA_HOME", None)
        return env

    def run(self, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        """What a double-click runs (the Exec line), with a headless command's arguments."""
        return subprocess.run([*self.exec_argv, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(**extra), check=False)

    def json(self, *args: str, registry: bool = True, **kwargs: object) -> dict[str, object]:
        flags = ["--registry", self.feed.url, "--public-key", str(self.feed.key.public_path)] if registry else []
        result = self.run(*args, *flags, "--json", **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def pointer(self) -> dict[str, object]:
        return dict(json.loads((self.root / "current.json").read_text()))


def derive_build(source: Path, dest: Path, version: str, *, crash: bool = False) -> Path:
    """A copy of `source` that says it is `version` (hard links: no 500 MB copy). With `crash`, its
    libpython is cut short, so the bootloader fails before any Python runs."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=link)
    info_path = buildinfo.path_in(dest)
    info = buildinfo.read(dest)
    info_path.unlink()  # a new file: the cached build's inode stays as it is
    info_path.write_bytes(replace(info, version=version).dumps())
    if crash:
        # Cut to nothing, the bootloader says "file too short" and exits 255; cut to a few pages,
        # it dies of SIGBUS: a crash all the same, but without a message to check.
        (lib,) = [p for p in (dest / "_internal").glob("libpython3*.so*") if p.is_file() and not p.is_symlink()]
        lib.unlink()
        lib.write_bytes(b"")
    return dest


def stored_zip(build: Path, out: Path) -> Path:
    """The build as a zip without compression (seconds, where gzip of 500 MB takes a minute here)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for entry in walk(build):
            name = f"{build.name}/{entry.rel}"
            if entry.is_link:
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, os.readlink(entry.path))
            elif entry.is_dir:
                info = zipfile.ZipInfo(name + "/")
                info.create_system = 3
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                zf.writestr(info, b"")
            else:
                zf.write(entry.path, name)
    return out


def publish_shell(installed: Installed, build: Path) -> tuple[dict[str, object], float]:
    archive = stored_zip(build, installed.work / f"{build.name}.zip")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "desktop", "publish-shell", str(archive), "--feed",
                             str(installed.feed.root), "--key", str(installed.feed.key.private_path), "--json"],
                            capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr
    archive.unlink()
    return json.loads(result.stdout), time.monotonic() - started


@pytest.fixture(scope="module")
def installed(built_app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("shell-update")
    home = work / "home of a user"  # a space, as real homes sometimes have
    (home / ".local" / "bin").mkdir(parents=True)
    (archive,) = DIST.glob(f"desktop-shell-{SHELL_VERSION}-linux-*.tar.gz")
    started = time.monotonic()
    with tarfile.open(archive) as tar:
        tar.extractall(work / "download", filter="tar")
    unpacked = work / "download" / archive.name[: -len(".tar.gz")]
    env = app_env(HOME=str(home))
    env.pop("XDG_DATA_HOME", None)
    result = subprocess.run([str(unpacked / "install.sh")], capture_output=True, text=True, timeout=300, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    print(f"\ne2e: unpacking {archive.name} and install.sh took {time.monotonic() - started:.1f} s")
    shutil.rmtree(unpacked)  # the install must not need the archive any more
    root = home / ".local" / "share" / "desktop-shell-app"
    argv = desktop_entry_exec(home / ".local" / "share" / "applications" / "desktop-shell.desktop")
    assert argv == [str(root / "desktop-shell")]
    with LoopbackServer() as server:
        yield Installed(home, root, argv, Feed(work / "feed", server, work / "feed-work"), work)


def test_the_installed_app_updates_itself_then_the_runtime_and_survives_a_crashing_shell(
        installed: Installed, built_app: Path) -> None:
    root, feed = installed.root, installed.feed

    # 1. Installed: shell 1.0.0 from the launcher, able to update itself.
    status = installed.json("status")
    shell = status["shell"]
    assert isinstance(shell, dict)
    assert (shell["version"], shell["installed"], shell["updates"], shell["install_root"]) == (
        "1.0.0", "1.0.0", "available", str(root))
    assert (status["version"], status["source"]) == ("1.0.0", "bundled")
    assert status["data_dir"] == str(installed.home / ".local" / "share" / "desktop-shell")

    # 2. Shell 1.1.0 and a runtime 1.1.0 that only shell >= 1.1 can run.
    build_110 = derive_build(built_app.parent, installed.work / "builds" / "desktop-shell-1.1.0", "1.1.0")
    published, publish_s = publish_shell(installed, build_110)
    feed.publish("1.1.0", requires_shell=">=1.1")

    # 3. Shell 1.0.0 stages shell 1.1.0 for the runtime that needs it; the runtime waits for it.
    started = time.monotonic()
    update = installed.json("update", timeout=900)
    update_s = time.monotonic() - started
    shell_update = update["shell"]
    assert isinstance(shell_update, dict)
    assert (update["outcome"], update["version"]) == ("up-to-date", "1.0.0")
    assert (shell_update["outcome"], shell_update["version"], shell_update["needed_by"]) == ("staged", "1.1.0",
                                                                                             "1.1.0")
    assert shell_update["bytes_downloaded"] >= published["length"]  # type: ignore[operator]
    assert update["bytes_downloaded"] >= shell_update["bytes_downloaded"]  # the run's total  # type: ignore[operator]
    assert (root / "shells" / "1.1.0" / "desktop").is_file()
    assert installed.pointer()["version"] == "1.1.0" and installed.pointer()["known_good"] is False
    print(f"\ne2e: publish-shell of a {published['length']:,} byte archive took {publish_s:.1f} s; the shell update "
          f"downloaded {shell_update['bytes_downloaded']:,} bytes and `update` took {update_s:.1f} s")

    # 4. The next start runs shell 1.1.0, which is then known good; it stages the runtime.
    status = installed.json("status")
    assert status["shell"]["version"] == "1.1.0"  # type: ignore[index]
    assert installed.pointer()["known_good"] is True
    update = installed.json("update", timeout=600)
    assert (update["outcome"], update["version"]) == ("staged", "1.1.0")
    assert update["shell"]["outcome"] == "up-to-date"  # type: ignore[index]
    launched = installed.json("launch", "--until-ready", registry=False, timeout=120)
    assert (launched["version"], launched["source"], launched["ready"]) == ("1.1.0", "staged", True)

    # 5. Shell 1.2.0 crashes at startup: the launcher falls back to 1.1.0 and 1.2.0 is marked bad.
    build_120 = derive_build(built_app.parent, installed.work / "builds" / "desktop-shell-1.2.0", "1.2.0", crash=True)
    published, publish_s = publish_shell(installed, build_120)
    update = installed.json("update", timeout=900)
    assert (update["shell"]["outcome"], update["shell"]["version"]) == ("staged", "1.2.0")  # type: ignore[index]
    # Shell 1.1.0 was staged here and recorded file by file: 1.2.0 comes as a delta from it.
    assert update["shell"]["delta"] is True  # type: ignore[index]
    assert update["shell"]["bytes_downloaded"] < published["length"] / 20  # type: ignore[index,operator]
    print(f"\ne2e: publish-shell of 1.2.0 (with its delta from 1.1.0) took {publish_s:.1f} s; the shell update "
          f"downloaded {update['shell']['bytes_downloaded']:,} bytes of a {published['length']:,} byte release")
    # Started by the launcher, the window would offer "Restart to update" (exit 85).
    assert update["shell"]["restart_exit_code"] == 85  # type: ignore[index]
    result = installed.run("status", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["shell"]["version"] == "1.1.0"
    assert "version 1.2.0 of the app failed to start" in result.stderr
    bad = status["shell"]["bad"]
    assert list(bad) == ["1.2.0"]
    assert (bad["1.2.0"]["reason"], bad["1.2.0"]["exit_code"]) == ("exited with code 255 before it was ready", 255)
    assert any("Failed to load Python shared library" in line for line in bad["1.2.0"]["stderr_tail"]), bad
    assert (installed.pointer()["version"], installed.pointer()["known_good"]) == ("1.1.0", True)
    log = (root / "health" / "launcher.log").read_text()
    assert "shell 1.2.0 exited" in log and "falling back from 1.2.0 to 1.1.0" in log

    # 6. It is not tried again: the next start is 1.1.0 at once, and 1.2.0 is not downloaded again.
    again = installed.run("status", "--json")
    assert again.returncode == 0 and "failed to start" not in again.stderr
    feed.server.clear_requests()
    update = installed.json("update", timeout=600)
    assert update["shell"]["outcome"] == "up-to-date"  # type: ignore[index]
    skipped = update["shell"]["skipped"]  # type: ignore[index]
    assert {"version": "1.2.0", "reason": "marked bad", "detail": ""} in skipped
    assert not [r for r in feed.server.requests_to("/feed/targets/") if "desktop-shell-1.2.0" in r.path]
    # The user's data and runtimes survived every shell change.
    assert (installed.home / ".local" / "share" / "desktop-shell" / "versions" / "1.1.0").is_dir()


def test_a_double_click_shows_the_window_of_the_current_shell(installed: Installed) -> None:
    """One offscreen GUI start through the Exec line; time from the launcher's start to the window."""
    if not (installed.root / "shells" / "1.1.0").is_dir():
        pytest.skip("needs the update test first")
    screenshot = installed.work / "window.png"
    extra = {"QT_QPA_PLATFORM": "offscreen"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        extra["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    health = installed.root / "health"
    started_wall = time.time()
    proc = subprocess.Popen([*installed.exec_argv, "run", "--exit-after", "8", "--screenshot", str(screenshot),
                             "--registry", installed.feed.url, "--public-key", str(installed.feed.key.public_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=installed.env(**extra))
    shown: float | None = None
    try:
        deadline = time.monotonic() + 60
        while shown is None and time.monotonic() < deadline and proc.poll() is None:
            for mark in health.glob(f"{proc.pid}.*.ok"):
                try:
                    shown = float(json.loads(mark.read_text())["time"]) - started_wall
                except (OSError, ValueError, KeyError):
                    continue
            time.sleep(0.01)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert shown is not None, "the window never reported itself healthy to the launcher"
    starts = [line for line in (health / "launcher.log").read_text().splitlines() if " start " in line]
    assert "start 1.1.0" in starts[-1]
    accent = accent_pixels(screenshot)
    print(f"\ne2e: launcher start to window shown (offscreen, health mark written): {shown:.2f} s; "
          f"{accent} sampled accent pixels")
    assert accent > 300, "the window does not show the runtime's page"
