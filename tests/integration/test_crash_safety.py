"""kill -9 at every named step of a real `desktop update` and `desktop launch`, at many points
spread over an update, and concurrent updaters."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig, load_config
from desktop.core.launching import staged_problem
from desktop.core.pointer import read_pointer
from desktop.core.results import UpdateOutcome as StageOutcome
from tests.integration.conftest import PACKAGE, run_cli
from tests.support.server import LoopbackServer
from tests.support.shells import update

KILL_POINTS = 40
UPDATE_STEPS = ("after-download", "mid-extract", "partial-complete", "after-rename", "after-pointer")
LAUNCH_STEPS = ("attempt-write", "lease-write", "bad-mark-write", "pointer-back")


def verify_staged(config: AppConfig, version: Version) -> bool:
    return staged_problem(config, version, full=True) is None


def _many_files(seed: int, count: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        size = rng.choice([200, 2_000, 20_000, 60_000])
        files[f"lib/pkg{i % 7}/mod{i}.dat"] = rng.randbytes(size)
    return files


def _observe(config: AppConfig) -> str:
    """Classify the on-disk state after a kill, and check the invariant."""
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None, "the pointer must never disappear"
    assert pointer.version in (Version("1.1.0"), Version("1.2.0"))
    assert verify_staged(config, pointer.version), f"pointer names an incomplete version {pointer.version}"
    versions = config.data.versions_dir
    names = {p.name for p in versions.iterdir()}
    if pointer.version == Version("1.2.0"):
        return "pointer-moved"
    if "1.2.0" in names:
        return "renamed-not-pointed"
    if any(".partial" in n for n in names):  # versions/<v>.partial or the extractor's temporary sibling
        return "extracting"
    if any(config.data.downloads_dir.iterdir()):
        return "downloading"
    return "nothing-yet"


def _cli(data: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "desktop", "update", "--data-dir", str(data), "--registry", url,
            "--registry-kind", "npm", "--json"]


def _invariants(config: AppConfig, allowed: tuple[str, ...]) -> Version:
    """After a kill: the pointer names a complete, verified version (never a partial one)."""
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None, "the pointer must never disappear"
    assert str(pointer.version) in allowed
    assert verify_staged(config, pointer.version), f"pointer names an incomplete version {pointer.version}"
    return pointer.version


def _converged(config: AppConfig) -> None:
    leftovers = [p.name for p in config.data.versions_dir.iterdir() if not p.name[0].isdigit()
                 or ".partial" in p.name or ".damaged" in p.name]
    assert leftovers == []
    assert list(config.data.downloads_dir.iterdir()) == []


@pytest.mark.parametrize("step", UPDATE_STEPS)
def test_kill_9_at_each_named_update_step(server: LoopbackServer, publish: Callable[..., Path], tmp_path: Path,
                                          step: str) -> None:
    url = f"{server.url}/{PACKAGE}"
    data = tmp_path / "data"
    publish("1.1.0")
    config = load_config(data_dir=data, registry=url, registry_kind="npm")
    assert update(config).outcome is StageOutcome.STAGED
    publish("1.2.0", extra_files=_many_files(3, 60))  # big enough for extraction to be "mid" when killed
    killed = subprocess.run(_cli(data, url), capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "DESKTOP_FAULT": step})
    assert killed.returncode == -signal.SIGKILL, f"the fault point {step} was not reached: {killed.stderr}"
    now = _invariants(config, ("1.1.0", "1.2.0"))
    assert now == (Version("1.2.0") if step == "after-pointer" else Version("1.1.0"))
    assert BadVersions(config.data.bad_file).load().entries == {}, "no version is wrongly bad"
    result = update(config)
    assert result.outcome in (StageOutcome.STAGED, StageOutcome.ALREADY_STAGED, StageOutcome.UP_TO_DATE)
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.2.0") and verify_staged(config, pointer.version)
    _converged(config)
    if step in ("after-rename", "after-pointer"):
        assert result.bytes_downloaded < 4096, "a complete version is adopted, not downloaded again"


@pytest.mark.parametrize("step", LAUNCH_STEPS)
def test_kill_9_at_each_named_launch_step(server: LoopbackServer, publish: Callable[..., Path], tmp_path: Path,
                                          step: str) -> None:
    url = f"{server.url}/{PACKAGE}"
    data = tmp_path / "data"
    config = load_config(data_dir=data, registry=url, registry_kind="npm")
    publish("1.1.0")
    assert update(config).outcome is StageOutcome.STAGED
    assert run_cli("launch", "--until-ready", "--data-dir", str(data)).returncode == 0  # 1.1.0 is known-good
    publish("1.2.0", simulate="crash-at-start")
    assert update(config).outcome is StageOutcome.STAGED
    killed = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data), env={"DESKTOP_FAULT": step})
    assert killed.returncode == -signal.SIGKILL, f"the fault point {step} was not reached: {killed.stderr}"
    _invariants(config, ("1.1.0", "1.2.0"))
    bad = BadVersions(config.data.bad_file).load()
    assert not bad.unknown and Version("1.1.0") not in bad, "the known-good version is never blamed"
    for _ in range(2):  # the next runs converge: 1.2.0 bad, 1.1.0 running
        again = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["version"] == "1.1.0"
    assert Version("1.2.0") in BadVersions(config.data.bad_file).load()
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0") and pointer.known_good
    assert list((data / "running").iterdir()) == []


def test_kill_9_at_points_spread_over_an_update_never_breaks_the_pointer(
        server: LoopbackServer, publish: Callable[..., Path], tmp_path: Path) -> None:
    url = f"{server.url}/{PACKAGE}"
    base = tmp_path / "base"
    publish("1.1.0")
    base_config = load_config(data_dir=base, registry=url, registry_kind="npm")
    assert update(base_config).outcome is StageOutcome.STAGED
    archive = publish("1.2.0", extra_files=_many_files(1, 400))
    tarball = f"/{PACKAGE}/-/{PACKAGE}-1.2.0.tgz"
    throttle = {"chunk": 128 * 1024, "delay": 0.02}
    assert archive.stat().st_size > 1_000_000

    # One uninterrupted run tells how long an update takes here.
    timing_dir = tmp_path / "timing"
    shutil.copytree(base, timing_dir)
    server.fault(tarball, "slow", **throttle)
    started = time.monotonic()
    done = subprocess.run(_cli(timing_dir, url), capture_output=True, text=True, timeout=120, check=False)
    # Kill runs share the disk with the recoveries before them and run a little slower: stretch the
    # window so the last kill points land after the pointer moved, not all before it.
    duration = (time.monotonic() - started) * 1.3
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "staged"

    states: Counter[str] = Counter()
    rng = random.Random(20261125)
    deadline = time.monotonic() + 240  # bounded on a loaded machine: fewer points rather than a timeout
    for i in range(KILL_POINTS):
        if time.monotonic() > deadline:
            break
        data = tmp_path / f"kill-{i}"
        shutil.copytree(base, data)
        server.fault(tarball, "slow", **throttle)
        proc = subprocess.Popen(_cli(data, url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Spread the kill points over the whole run, jittered within each slot.
        time.sleep(duration * (i + rng.random()) / KILL_POINTS)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        config = load_config(data_dir=data, registry=url, registry_kind="npm")
        states[_observe(config)] += 1
        server.clear_faults()
        result = update(config)
        assert result.outcome in (StageOutcome.STAGED, StageOutcome.ALREADY_STAGED, StageOutcome.UP_TO_DATE)
        pointer = read_pointer(config.data.pointer_file)
        assert pointer is not None and pointer.version == Version("1.2.0")
        assert verify_staged(config, Version("1.2.0"))
        _converged(config)
        shutil.rmtree(data)
    print(f"kill points: {sum(states.values())}, states observed: {dict(states)}")
    assert sum(states.values()) >= 15
    # The kills must really land in different phases of the update, not all before or after it.
    assert len(states) >= 3, states


def test_four_concurrent_updates_agree(server: LoopbackServer, publish: Callable[..., Path],
                                       data_dir: Path) -> None:
    url = f"{server.url}/{PACKAGE}"
    publish("1.2.0", extra_files=_many_files(2, 100))
    tarball = f"/{PACKAGE}/-/{PACKAGE}-1.2.0.tgz"
    server.fault(tarball, "slow", chunk=64 * 1024, delay=0.01)
    procs = [subprocess.Popen(_cli(data_dir, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out)["outcome"])
    assert outcomes.count("staged") == 1, outcomes
    assert set(outcomes) <= {"staged", "busy", "already-staged", "up-to-date"}
    downloads = [r for r in server.requests if r.path == tarball]
    assert len(downloads) == 1, "nothing re-downloaded needlessly"
    config = load_config(data_dir=data_dir, registry=url, registry_kind="npm")
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.2.0")
    assert sorted(os.listdir(config.data.versions_dir)) == ["1.2.0"]
