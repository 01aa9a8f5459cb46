"""The system package: the built .deb installs and removes cleanly with the real dpkg (`--root` into a
temporary directory whose dpkg database knows this machine's copies of the dependencies).

    .venv/bin/pytest -m e2e tests/e2e/test_packages.py -q -s
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.built_app import DIST, SHELL_VERSION, app_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900),
              pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("dpkg") is None,
                                 reason="needs dpkg")]


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dpkg", f"--root={root}", f"--log={root}/dpkg.log", "--force-script-chrootless", *args],
                          capture_output=True, text=True, timeout=600, check=False)


def fake_system(root: Path, deb: Path) -> None:
    """An empty system whose dpkg database lists this machine's copies of the package's dependencies."""
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "available").touch()
    depends = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends"], capture_output=True, text=True,
                             check=True).stdout
    names = [re.split(r"[ (]", part.strip())[0] for part in depends.split(",") if part.strip()]
    stanzas = []
    for name in names:
        query = subprocess.run(["dpkg-query", "-s", name], capture_output=True, text=True, check=False)
        if query.returncode != 0:
            pytest.skip(f"this machine lacks {name}, a dependency of the package")
        stanzas.append(query.stdout.strip() + "\n")
    (admin / "status").write_text("\n".join(stanzas))


def test_the_deb_installs_runs_as_a_managed_shell_and_removes_cleanly(built_app: Path, tmp_path: Path) -> None:
    (deb,) = DIST.glob(f"desktop-shell_{SHELL_VERSION}_*.deb")
    root = tmp_path / "system"
    fake_system(root, deb)
    installed = dpkg(root, "--install", str(deb))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    status = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Status} ${Version}",
                             "desktop-shell"], capture_output=True, text=True, check=True).stdout
    assert status == f"install ok installed {SHELL_VERSION}"
    files = dpkg(root, "--listfiles", "desktop-shell").stdout.splitlines()
    for path in ("/usr/bin/desktop-shell", "/usr/lib/desktop-shell/desktop", "/usr/lib/desktop-shell/policy.json",
                 "/usr/share/applications/desktop-shell.desktop",
                 "/usr/share/icons/hicolor/scalable/apps/desktop-shell.svg", "/usr/share/doc/desktop-shell/copyright"):
        assert path in files, path
    assert not [f for f in files if f.startswith(("/opt", "/home", "/usr/local")) or "/desktop/" in f]
    entry = (root / "usr" / "share" / "applications" / "desktop-shell.desktop").read_text()
    assert "Exec=/usr/bin/desktop-shell\n" in entry
    # The installed program, started as the menu entry would (through /usr/bin), knows that the
    # package manager owns it: no self-update, and the window can say so.
    program = root / "usr" / "bin" / "desktop-shell"
    assert os.readlink(program) == "../lib/desktop-shell/desktop"
    result = subprocess.run([str(program), "status", "--json", "--data-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=120, env=app_env(), check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["shell"]["updates"], report["policy"]["shell_updates"], report["policy"]["runtime_updates"]) == (
        "managed", False, True)
    assert "package manager" in report["shell"]["reason"]
    assert report["policy"]["sources"] == [str(root / "usr" / "lib" / "desktop-shell" / "policy.json")]
    # Remove, then purge: nothing of the package is left behind.
    removed = dpkg(root, "--purge", "desktop-shell")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not str(p.relative_to(root)).startswith(("var/lib/dpkg", "dpkg.log")) and not p.is_dir())
    assert left == []
    assert not (root / "usr" / "lib" / "desktop-shell").exists()
    assert subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "desktop-shell"],
                          capture_output=True, text=True, check=False).returncode != 0


def test_the_deb_is_well_formed(built_app: Path) -> None:
    (deb,) = DIST.glob(f"desktop-shell_{SHELL_VERSION}_*.deb")
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True, check=True).stdout
    assert f"Version: {SHELL_VERSION}" in info and "Package: desktop-shell" in info
    assert "data.tar.gz" in subprocess.run(["ar", "t", str(deb)], capture_output=True, text=True, check=True).stdout \
        if shutil.which("ar") else True
    contents = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    owners = {line.split()[1] for line in contents.splitlines()}
    assert owners == {"root/root"}
    assert all(not line.split()[0].endswith("w") and line.split()[0][5] != "w" for line in contents.splitlines()
               if not line.startswith("l")), "nothing writable by group or others"
