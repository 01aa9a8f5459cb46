"""Disks and other users misbehave: a full disk, a partial owned by root, a killed feed download."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.failures import FailureMemory
from desktop.core.pointer import read_pointer
from desktop.core.results import UpdateOutcome
from desktop.core.shell import Shell
from tests.integration.conftest import PACKAGE, run_cli
from tests.support.feed import Feed
from tests.support.server import LoopbackServer
from tests.support.shells import update

Publish = Callable[..., Path]
Config = Callable[..., AppConfig]
NOBODY = 65534


def as_user(uid: int, job: Callable[[], Any]) -> Any:
    """Run `job` in a forked child that dropped to `uid` (everything it needs is already imported)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            result: Any = job()
        except BaseException as exc:  # reported to the parent
            result = exc
        with os.fdopen(write, "wb") as out:
            try:
                pickle.dump(result, out)
            except Exception:
                pickle.dump(RuntimeError(repr(result)), out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another uid can reach (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="desktop-uid-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_stale_partial_owned_by_root_does_not_stop_staging(
        server: LoopbackServer, publish: Publish, shared_tmp: Path) -> None:
    publish("1.2.0")
    data = shared_tmp / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)
    options = {"data_dir": data, "registry": f"{server.url}/{PACKAGE}", "registry_kind": "npm"}
    # The child cannot read this interpreter's files: one update as root imports all it will need.
    warm = {**options, "data_dir": shared_tmp / "warm-up"}
    assert Shell.open(**warm).update().outcome is UpdateOutcome.STAGED
    Shell.open(**warm).collect_garbage()
    versions = data / "versions"
    versions.mkdir(mode=0o755)
    os.chown(versions, NOBODY, NOBODY)
    stale = versions / "1.2.0.partial"  # left by a `sudo desktop update`
    (stale / "app").mkdir(parents=True)
    (stale / "app" / "main.py").write_text("x")
    report = as_user(NOBODY, lambda: Shell.open(**options).update())
    assert not isinstance(report, BaseException), report
    assert report.outcome is UpdateOutcome.STAGED, report
    pointer = read_pointer(data / "current.json")
    assert pointer is not None and pointer.version == Version("1.2.0")
    assert stale.is_dir(), "it was not ours to remove"
    gc = as_user(NOBODY, lambda: Shell.open(**options).collect_garbage())
    assert not isinstance(gc, BaseException), gc
    assert gc.problems == ("cannot remove 1.2.0.partial",)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_staging_fails_in_one_line_and_frees_the_space(
        server: LoopbackServer, publish: Publish, small_disk: Path) -> None:
    big = {f"lib/blob{i}.bin": os.urandom(1024 * 1024) for i in range(8)}  # 8 MB, incompressible
    publish("1.2.0", extra_files=big)
    data = small_disk / "data"
    base = ["--data-dir", str(data), "--registry", f"{server.url}/{PACKAGE}", "--registry-kind", "npm"]
    free_before = shutil.disk_usage(small_disk).free
    result = run_cli("update", *base, "--json", env={"DESKTOP_MIN_FREE_BYTES": "0"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("desktop:")]
    assert len(lines) == 1 and "not enough disk space: need" in lines[0], result.stderr
    obj = json.loads(result.stdout)
    assert obj["outcome"] == "failed" and "disk space" in obj["error"], obj
    assert obj["failure"] == "transient" and not obj["pinned"]
    assert shutil.disk_usage(small_disk).free > free_before - 512 * 1024, "what was written is removed"
    assert not [p for p in (data / "versions").iterdir()] if (data / "versions").exists() else True


def test_a_failed_stage_reports_the_bytes_it_downloaded(server: LoopbackServer, publish: Publish,
                                                        npm_config: Config) -> None:
    publish("1.2.0", manifest_version="1.2.5")
    report = update(npm_config())
    assert report.outcome is UpdateOutcome.FAILED and report.pinned
    assert report.bytes_downloaded > 10_000


def test_staging_never_flushes_the_whole_machine(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("os.sync() flushes every filesystem")

    monkeypatch.setattr(os, "sync", refuse)
    publish("1.2.0")
    assert update(npm_config()).outcome is UpdateOutcome.STAGED


def test_a_feed_download_killed_midway_resumes_and_never_pins(server: LoopbackServer, tmp_path: Path) -> None:
    feed = Feed(tmp_path / "feed", server, tmp_path / "work")
    feed.publish("1.2.0", extra_files={"lib/blob.bin": os.urandom(3 * 1024 * 1024)})
    target = "/feed/targets/" + feed.target_file("notes-runtime-1.2.0").name
    server.fault(target, "slow", chunk=64 * 1024, delay=0.05)
    data = tmp_path / "data"
    cli = [sys.executable, "-m", "desktop", "update", "--data-dir", str(data), "--registry", feed.url,
           "--public-key", feed.key.public, "--json"]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    part = None
    while time.monotonic() < deadline:
        parts = list((data / "downloads").glob("*.part")) if (data / "downloads").exists() else []
        if parts and parts[0].stat().st_size > 256 * 1024:
            part = parts[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert part is not None, "the download never started"
    server.clear_faults()
    server.clear_requests()
    config = feed.config(data)
    report = update(config)
    assert report.outcome is UpdateOutcome.STAGED, report
    ranged = [r for r in server.requests if r.path == target and "range" in r.headers]
    assert ranged and ranged[0].status == 206, "the feed download resumed with Range"
    assert ranged[0].bytes_sent < feed.target_file("notes-runtime-1.2.0").stat().st_size
    assert FailureMemory(config.data.failures_file).pinned() == {}
