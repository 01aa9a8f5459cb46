"""One shell per data dir, with an activation socket nobody else can take (issue 12, finding 7)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from desktop.ui.single_instance import SingleInstance, socket_path

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
SQUATTER = r"""
import os, socket, sys, time
log = sys.argv[1]
servers = []
for path in sys.argv[2:]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(5)
    server.setblocking(False)
    servers.append(server)
print("ready", flush=True)
deadline = time.time() + 60
while time.time() < deadline:
    for server in servers:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            continue
        conn.settimeout(2)
        data = conn.recv(100)
        with open(log, "ab") as out:
            out.write(data or b"(connected)")
    time.sleep(0.02)
"""


@pytest.fixture
def instances(qapp: object) -> Iterator[list[SingleInstance]]:
    made: list[SingleInstance] = []
    yield made
    for instance in made:
        instance.release()


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A private runtime dir with a short path, as /run/user/<uid> is (socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="run-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_socket_lives_in_xdg_runtime_dir_private_to_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 runtime_dir: Path,
                                                                 instances: list[SingleInstance]) -> None:
    runtime = runtime_dir
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    primary = SingleInstance(tmp_path / "data")
    instances.append(primary)
    assert primary.acquire() and primary.listening
    assert primary.path.parent == runtime / "desktop-shell"
    info = os.lstat(primary.path.parent)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert stat.S_ISSOCK(os.lstat(primary.path).st_mode)
    assert stat.S_IMODE(os.lstat(primary.path).st_mode) & 0o077 == 0
    assert not str(primary.path).startswith(tempfile.gettempdir() + "/desktop-shell-"), "no predictable /tmp name"


def test_without_xdg_runtime_dir_the_socket_lives_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  instances: list[SingleInstance]) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    primary = SingleInstance(tmp_path / "data")
    instances.append(primary)
    assert primary.acquire() and primary.listening
    assert primary.path == tmp_path / "data" / "instance" / "activate.sock"
    assert stat.S_IMODE(os.lstat(primary.path.parent).st_mode) == 0o700


def test_a_failed_listen_is_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                    instances: list[SingleInstance]) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    blocker = tmp_path / "data" / "instance" / "activate.sock"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("a directory where the socket should be")
    os.chmod(blocker.parent, 0o700)
    primary = SingleInstance(tmp_path / "data")
    instances.append(primary)
    with caplog.at_level(logging.WARNING, logger="desktop.ui.single_instance"):
        assert primary.acquire(), "still the one instance (it holds the lock)"
    assert not primary.listening
    assert "cannot listen for a second start" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
@pytest.mark.parametrize("where", ["shared runtime dir", "planted subdirectory"])
def test_a_squatter_from_another_user_gets_no_activation(qtbot: QtBot, tmp_path: Path, where: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        instances: list[SingleInstance]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shared = Path(tempfile.mkdtemp(prefix="xdg-", dir="/tmp"))
    try:
        if where == "shared runtime dir":
            os.chmod(shared, 0o1777)  # like /tmp: anyone may create entries
        else:
            os.chmod(shared, 0o700)  # ours and private, but someone planted desktop-shell/ in it
            (shared / "desktop-shell").mkdir(mode=0o777)
            os.chown(shared / "desktop-shell", NOBODY, NOBODY)
            os.chmod(shared, 0o711)
        digest = hashlib.sha256(str(data.resolve()).encode()).hexdigest()
        targets = [str(shared / "desktop-shell" / f"{digest[:16]}.sock"), f"/tmp/desktop-shell-{digest[:16]}"]
        log = shared / "squatter.log"
        squatter = subprocess.Popen(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                                     "/usr/bin/python3", "-c", SQUATTER, str(log), *targets],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ready", squatter.stderr
            monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
            primary = SingleInstance(data)
            instances.append(primary)
            assert primary.acquire() and primary.listening
            assert primary.path == data / "instance" / "activate.sock", "the planted directory is not used"
            assert socket_path(data) == primary.path
            env = {**os.environ, "XDG_RUNTIME_DIR": str(shared), "QT_QPA_PLATFORM": "offscreen",
                   "DESKTOP_NO_WEBVIEW": "1"}
            with qtbot.waitSignal(primary.activated, timeout=20_000):
                second = subprocess.Popen([sys.executable, "-m", "desktop", "run", "--data-dir", str(data)],
                                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
            _, err = second.communicate(timeout=30)
            assert second.returncode == 0 and "already running" in err
            time.sleep(0.2)  # the squatter polls every 20 ms: give it the chance to record a late connection
            assert not log.exists(), log.read_bytes() if log.exists() else b""
        finally:
            squatter.kill()
            squatter.communicate(timeout=10)
    finally:
        for target in (f"/tmp/desktop-shell-{hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:16]}",):
            Path(target).unlink(missing_ok=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_a_second_start_brings_the_first_forward(qtbot: QtBot, tmp_path: Path, runtime_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 instances: list[SingleInstance]) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    primary = SingleInstance(tmp_path / "data")
    instances.append(primary)
    assert primary.acquire()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DESKTOP_NO_WEBVIEW": "1"}
    with qtbot.waitSignal(primary.activated, timeout=20_000):
        second = subprocess.Popen([sys.executable, "-m", "desktop", "run", "--data-dir", str(tmp_path / "data")],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 0 and "already running" in err


def test_a_silent_client_does_not_hold_the_window(qtbot: QtBot, tmp_path: Path, runtime_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  instances: list[SingleInstance]) -> None:
    """A client that connects and says nothing is read asynchronously: the GUI thread never waits on it."""
    import socket

    from tests.gui.conftest import Heartbeat

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    primary = SingleInstance(tmp_path / "data")
    instances.append(primary)
    assert primary.acquire()
    with Heartbeat() as beat, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(primary.path))
        qtbot.wait(400)
        with qtbot.waitSignal(primary.activated, timeout=5000), \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(primary.path))
            client.sendall(b"activate\n")
    assert beat.longest_stall < 0.1
