"""Races and the world stopping things: a quit during a restart, a logout during a start, a runtime
that writes into its own files, two shells marking versions at once, odd files in the data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig
from desktop.core.pointer import read_pointer
from desktop.core.results import Running, StartFailed, Stopped, UpdateOutcome
from tests.integration.conftest import run_cli
from tests.support.server import LoopbackServer
from tests.support.shells import Supervised, stage, stubborn_files, supervised_fixture, update

Publish = Callable[..., Path]
Config = Callable[..., AppConfig]
Make = Callable[..., Supervised]


@pytest.fixture
def supervised() -> Iterator[Make]:
    yield from supervised_fixture()


def test_quitting_during_restart_to_update_blames_nothing(server: LoopbackServer, publish: Publish,
                                                          npm_config: Config, supervised: Make) -> None:
    """The old runtime takes its time to stop; the user quits meanwhile: the new version never runs,
    nothing is marked bad and stop() still keeps its promise."""
    config = npm_config(startup_timeout=30)
    stage(config, publish, "1.5.0", extra_files=stubborn_files("ready"))
    run = supervised(config)
    assert isinstance(run.start(), Running)
    stage(config, publish, "1.6.0", simulate="hang-at-start")
    before = len(run.events)
    run.supervisor.restart()
    time.sleep(0.5)
    started = time.monotonic()
    assert run.supervisor.stop()
    assert time.monotonic() - started < 5
    time.sleep(1.0)
    assert BadVersions(config.data.bad_file).load().entries == {}
    assert not [e for e in run.events[before:] if isinstance(e, Running)], "nothing started after the quit"
    assert not run.of(StartFailed)
    assert isinstance(run.events[-1], Stopped)


def test_a_stop_signal_from_outside_during_a_start_is_not_a_crash(
        server: LoopbackServer, publish: Publish, npm_config: Config, data_dir: Path) -> None:
    """A logout sends SIGTERM to every process: here the runtime's group gets it before the shell."""
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "launch", "--until-ready", "--json",
                             "--startup-timeout", "60", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    group = None
    while time.monotonic() < deadline and group is None:
        for lease in (data_dir / "running").glob("*.json") if (data_dir / "running").exists() else []:
            text = lease.read_text()
            if '"state": "starting"' in text:
                group = _guardian_of(proc.pid)
        time.sleep(0.05)
    assert group is not None
    time.sleep(0.5)
    os.killpg(group, signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "interrupted" in err, err
    assert BadVersions(config.data.bad_file).load().entries == {}, "a stop from outside blames no version"


def _guardian_of(shell_pid: int) -> int | None:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == shell_pid and b"guardian" in cmdline:
                return int(name)
    return None


def test_a_runtime_that_changes_its_own_files_is_blamed_not_healed_for_ever(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervised: Make) -> None:
    config = npm_config()
    main = ("import os, sys\nhere = os.path.dirname(os.path.abspath(__file__))\n"
            "open(os.path.join(here, 'state.db'), 'ab').write(b'more')\nsys.exit(17)\n")
    stage(config, publish, "1.6.0", extra_files={"app/main.py": main.encode(), "app/state.db": b"seed"})
    run = supervised(config)
    event = run.start()
    assert isinstance(event, Running) and event.source == "bundled"
    failed = run.of(StartFailed)[0]
    assert failed.marked_bad and not failed.damaged
    entry = BadVersions(config.data.bad_file).load().entries[Version("1.6.0")]
    assert "changed its own file app/state.db" in entry.reason
    server.clear_requests()
    assert update(config).outcome is UpdateOutcome.BAD_VERSION
    assert not [r for r in server.requests if r.path.endswith(".tgz")], "not downloaded again"


def test_a_running_version_is_never_replaced_under_it_and_healing_gives_up(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervised: Make) -> None:
    config = npm_config()
    stage(config, publish, "1.6.0")
    run = supervised(config)
    assert isinstance(run.start(), Running)
    page = config.data.version_dir(Version("1.6.0")) / "app" / "notes_page.py"
    with open(page, "ab") as handle:  # what a runtime writing into its own files does
        handle.write(b"# changed\n")
    report = update(config)
    assert report.outcome is UpdateOutcome.FAILED and "running" in str(report.error)
    assert page.exists(), "the running version's directory was left alone"
    run.supervisor.stop()
    for _ in range(2):  # healed twice...
        with open(page, "ab") as handle:
            handle.write(b"# changed\n")
        assert update(config).outcome is UpdateOutcome.STAGED
        with open(config.data.version_dir(Version("1.6.0")) / "app" / "notes_page.py", "ab") as handle:
            handle.write(b"# changed\n")
    third = update(config)  # ...then refused: it cannot be verified
    assert third.outcome is UpdateOutcome.FAILED and third.pinned
    assert "keeps changing its own files" in str(third.error)


def test_two_processes_marking_versions_bad_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad-versions.json"
    code = (
        "import sys\nfrom packaging.version import Version\nfrom desktop.core.badlist import BadVersions\n"
        f"bad = BadVersions(__import__('pathlib').Path({str(path)!r}))\n"
        "start = int(sys.argv[1])\nfor i in range(start, start + 40):\n    bad.mark(Version(f'1.{i}.0'), 'x')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in (0, 40)]
    for proc in procs:
        assert proc.wait(120) == 0
    assert len(BadVersions(path).load().entries) == 80


def test_a_fifo_where_a_state_file_should_be_hangs_nothing(data_dir: Path) -> None:
    os.mkfifo(data_dir / "bad-versions.json")
    os.mkfifo(data_dir / "current.json")
    result = run_cli("status", "--json", "--data-dir", str(data_dir), timeout=30)
    assert result.returncode == 0 and json.loads(result.stdout)["source"] == "bundled"


def test_staged_versions_are_private(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    config = npm_config()
    stage(config, publish, "1.6.0")
    modes = {p: p.lstat().st_mode & 0o777 for p in config.data.version_dir(Version("1.6.0")).rglob("*")
             if not p.is_symlink()}
    assert modes and all(mode & 0o077 == 0 for mode in modes.values()), \
        {str(p): oct(m) for p, m in modes.items() if m & 0o077}


def test_ctrl_c_during_an_update_is_prompt_and_still_one_json_object(
        server: LoopbackServer, publish: Publish, data_dir: Path) -> None:
    publish("1.6.0", extra_files={"lib/blob.bin": os.urandom(3 * 1024 * 1024)})
    server.fault("/notes-runtime/-/notes-runtime-1.6.0.tgz", "slow", chunk=32 * 1024, delay=0.1)
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "update", "--json", "--data-dir", str(data_dir),
                             "--registry", f"{server.url}/notes-runtime", "--registry-kind", "npm"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((data_dir / "downloads").glob("*.part")) \
            if (data_dir / "downloads").exists() else time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 5, "Ctrl-C does not wait for the download to finish"
    assert proc.returncode == 1 and "Traceback" not in err
    obj = json.loads(out)
    assert obj["outcome"] == "failed"
    assert read_pointer(data_dir / "current.json") is None


def test_cli_json_contract_holds_when_things_fail_early(tmp_path: Path, server: LoopbackServer) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = run_cli("update", "--json", "--data-dir", str(shared))
    assert refused.returncode == 1 and json.loads(refused.stdout)["outcome"] == "failed"
    bad_url = run_cli("update", "--json", "--data-dir", str(tmp_path / "d"), "--registry", "ftp://x/y",
                      "--registry-kind", "npm")
    assert bad_url.returncode == 2 and json.loads(bad_url.stdout)["outcome"] == "failed"
    checked = run_cli("check", "--json", "--data-dir", str(tmp_path / "d"), "--registry", "ftp://x/y",
                      "--registry-kind", "npm")
    assert checked.returncode == 2 and "error" in json.loads(checked.stdout)


def test_a_runtime_that_gives_up_after_ready_prints_one_json_object(tmp_path: Path, npm_config: Config) -> None:
    from desktop.devtools import resources_with_broken_bundle

    resources = resources_with_broken_bundle(npm_config().resources, tmp_path / "res", "crash-after-ready:0.2")
    env = {"DESKTOP_RESOURCES": str(resources)}
    result = run_cli("launch", "--json", "--data-dir", str(tmp_path / "d"), env=env, timeout=120)
    assert result.returncode == 1
    objects = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(objects) == 1 and json.loads(objects[0])["ready"] is True
    assert "keeps crashing" in result.stderr


def test_npm_cache_keeps_no_credentials_and_downloads_still_authenticate(
        server: LoopbackServer, publish: Publish, data_dir: Path) -> None:
    publish("1.6.0")
    doc = server.npm_document("notes-runtime")
    tarball = doc["versions"]["1.6.0"]["dist"]["tarball"]
    doc["versions"]["1.6.0"]["dist"]["tarball"] = tarball.replace("http://", "http://alice:t0ken@")
    server.set_npm_document("notes-runtime", doc)
    url = server.url.replace("http://", "http://alice:t0ken@") + "/notes-runtime"
    result = run_cli("update", "--json", "--data-dir", str(data_dir), "--registry", url, "--registry-kind", "npm")
    assert json.loads(result.stdout)["outcome"] == "staged", result.stderr
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert b"t0ken" not in path.read_bytes(), path
    sent = [r for r in server.requests if r.path.endswith(".tgz")]
    assert sent and all(r.headers.get("authorization", "").startswith("Basic ") for r in sent)
    threading.Event().wait(0)
