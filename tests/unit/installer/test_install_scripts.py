"""install.sh and uninstall.sh of the per-user archive, on an unpacked archive with a fake build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from desktop.core.pointer import read_pointer
from tests.support.installs import HEALTHY, INSTALL_SH, LAUNCHER, UNINSTALL_SH, desktop_entry_exec, fake_build

# A home directory a real user could have: spaces, quotes, a dollar, a percent and a backslash.
AWKWARD = 'we ird "home" $HOME `x` 100% \\dir'


def unpacked(where: Path, version: str, body: str = f'echo "ran {{v}} $*"\n{HEALTHY}') -> Path:
    top = where / f"desktop-shell-{version}-linux-x86_64"
    top.mkdir(parents=True)
    for script in (INSTALL_SH, UNINSTALL_SH, LAUNCHER):
        shutil.copyfile(script, top / script.name)
        (top / script.name).chmod(0o755)
    fake_build(top / "shell", version, body.replace("{v}", version))
    return top


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_DATA_HOME", "DESKTOP_SHELL_ROOT")}
    env.update(HOME=str(home), **extra)
    return env


def run(script: Path, home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60, env=env_for(home, **extra),
                          check=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / AWKWARD
    (path / ".local" / "bin").mkdir(parents=True)
    return path


def test_install_lays_out_the_root_and_a_menu_entry_whose_exec_starts_the_launcher(home: Path,
                                                                                  tmp_path: Path) -> None:
    top = unpacked(tmp_path / "dl", "1.0.0")
    result = run(top / "install.sh", home)
    assert result.returncode == 0, result.stderr
    root = home / ".local" / "share" / "desktop-shell-app"
    assert (root / "installed").read_text() == "1.0.0\n"
    assert (root / "shells" / "1.0.0" / "desktop").is_file()
    assert (root / "desktop-shell").read_bytes() == LAUNCHER.read_bytes()
    assert (root / "uninstall.sh").read_bytes() == UNINSTALL_SH.read_bytes()
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    assert not list((root / "shells").glob(".*")), "no leftovers of the copy"
    entry = home / ".local" / "share" / "applications" / "desktop-shell.desktop"
    argv = desktop_entry_exec(entry)
    assert argv == [str(root / "desktop-shell")]
    assert (home / ".local" / "share" / "icons" / "hicolor" / "scalable" / "apps" / "desktop-shell.svg").is_file()
    assert os.readlink(home / ".local" / "bin" / "desktop-shell") == str(root / "desktop-shell")
    # What a double-click starts: the launcher, which starts the installed shell.
    started = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env_for(home), check=False)
    assert started.stdout.strip() == "ran 1.0.0", started.stderr
    # The archive can go: the install does not depend on it.
    shutil.rmtree(top)
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env_for(home),
                          check=False).stdout.strip() == "ran 1.0.0"


def test_install_is_idempotent_and_keeps_a_staged_shell_of_the_same_install(home: Path, tmp_path: Path) -> None:
    top = unpacked(tmp_path / "dl", "1.0.0")
    assert run(top / "install.sh", home).returncode == 0
    root = home / ".local" / "share" / "desktop-shell-app"
    fake_build(root / "shells" / "1.1.0", "1.1.0", f'echo "ran 1.1.0"\n{HEALTHY}')
    (root / "current.json").write_text('{\n  "version": "1.1.0",\n  "known_good": true\n}\n')
    marker = root / "shells" / "1.0.0" / "marker"
    marker.write_text("same inode")
    again = run(top / "install.sh", home)
    assert again.returncode == 0 and "already installed" in again.stdout
    assert marker.exists(), "an identical build is not copied again"
    pointer = read_pointer(root / "current.json")
    assert pointer is not None and str(pointer.version) == "1.1.0"


def test_installing_another_version_by_hand_makes_it_the_one_that_runs(home: Path, tmp_path: Path) -> None:
    assert run(unpacked(tmp_path / "a", "1.0.0") / "install.sh", home).returncode == 0
    root = home / ".local" / "share" / "desktop-shell-app"
    fake_build(root / "shells" / "1.1.0", "1.1.0", f'echo "ran 1.1.0"\n{HEALTHY}')
    (root / "current.json").write_text('{\n  "version": "1.1.0"\n}\n')
    assert run(unpacked(tmp_path / "b", "2.0.0") / "install.sh", home).returncode == 0
    assert (root / "installed").read_text() == "2.0.0\n"
    assert not (root / "current.json").exists()
    started = subprocess.run([str(root / "desktop-shell")], capture_output=True, text=True, timeout=60,
                             env=env_for(home), check=False)
    assert started.stdout.strip() == "ran 2.0.0"


def test_a_rebuilt_build_of_the_same_version_replaces_the_old_copy(home: Path, tmp_path: Path) -> None:
    assert run(unpacked(tmp_path / "a", "1.0.0") / "install.sh", home).returncode == 0
    root = home / ".local" / "share" / "desktop-shell-app"
    (root / "records").mkdir()
    (root / "records" / "1.0.0.json").write_text("{}")
    top = unpacked(tmp_path / "b", "1.0.0", body='echo "rebuilt"')
    info = top / "shell" / "_internal" / "build-info.json"
    info.write_text(info.read_text().replace('"build": ""', '"build": "second"'))
    assert run(top / "install.sh", home).returncode == 0
    assert "rebuilt" in (root / "shells" / "1.0.0" / "desktop").read_text()
    assert not (root / "records" / "1.0.0.json").exists(), "the old copy's record would not match"


@pytest.mark.parametrize("mode", [0o770, 0o707])
def test_install_refuses_a_root_others_can_write_to(home: Path, tmp_path: Path, mode: int) -> None:
    root = home / ".local" / "share" / "desktop-shell-app"
    root.mkdir(parents=True)
    root.chmod(mode)
    result = run(unpacked(tmp_path / "a", "1.0.0") / "install.sh", home)
    assert result.returncode == 1
    assert "others can write to it; refusing" in result.stderr
    assert not (root / "shells").exists()


def test_install_refuses_a_build_that_names_no_version(home: Path, tmp_path: Path) -> None:
    top = unpacked(tmp_path / "a", "1.0.0")
    (top / "shell" / "_internal" / "build-info.json").write_text('{\n  "version": "../../x"\n}\n')
    result = run(top / "install.sh", home)
    assert result.returncode == 1 and "not a version" in result.stderr
    assert not (home / ".local" / "share" / "desktop-shell-app" / "shells").exists()


def test_install_into_xdg_data_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    result = run(unpacked(tmp_path / "a", "1.0.0") / "install.sh", home, XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "xdg" / "desktop-shell-app" / "installed").is_file()
    assert desktop_entry_exec(tmp_path / "xdg" / "applications" / "desktop-shell.desktop") == [
        str(tmp_path / "xdg" / "desktop-shell-app" / "desktop-shell")]


def test_uninstall_keeps_the_users_data_unless_purged(home: Path, tmp_path: Path) -> None:
    assert run(unpacked(tmp_path / "a", "1.0.0") / "install.sh", home).returncode == 0
    share = home / ".local" / "share"
    data = share / "desktop-shell"
    (data / "runtime-data").mkdir(parents=True)
    (data / "runtime-data" / "notes.json").write_text("[]")
    root = share / "desktop-shell-app"
    result = run(root / "uninstall.sh", home)
    assert result.returncode == 0, result.stderr
    assert not root.exists()
    assert not (share / "applications" / "desktop-shell.desktop").exists()
    assert not (share / "icons" / "hicolor" / "scalable" / "apps" / "desktop-shell.svg").exists()
    assert not os.path.lexists(home / ".local" / "bin" / "desktop-shell")
    assert (data / "runtime-data" / "notes.json").read_text() == "[]"
    # Again: nothing left to do, still fine.
    assert run(unpacked(tmp_path / "b", "1.0.0") / "uninstall.sh", home).returncode == 0
    assert run(unpacked(tmp_path / "c", "1.0.0") / "install.sh", home).returncode == 0
    assert run(root / "uninstall.sh", home, "--purge").returncode == 0
    assert not data.exists() and not root.exists()


def test_uninstall_leaves_a_directory_that_is_not_an_install_alone(home: Path, tmp_path: Path) -> None:
    root = home / ".local" / "share" / "desktop-shell-app"
    root.mkdir(parents=True)
    (root / "precious").write_text("x")
    result = run(unpacked(tmp_path / "a", "1.0.0") / "uninstall.sh", home)
    assert result.returncode == 0 and "left alone" in result.stderr
    assert (root / "precious").exists()


def test_the_scripts_are_posix_sh() -> None:
    for script in (INSTALL_SH, UNINSTALL_SH, LAUNCHER):
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
        if shutil.which("shellcheck"):
            result = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True,
                                    check=False)
            assert result.returncode == 0, result.stdout
