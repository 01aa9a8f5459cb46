"""Launch, fallback, commit, rollback and supervision with real runtime processes."""

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
from desktop.core.paths import open_data_dir
from desktop.core.pointer import read_pointer
from desktop.core.results import (
    Crashed,
    ExitKind,
    Failed,
    Running,
    RuntimeState,
    StartFailed,
    Starting,
    Stopped,
    UpdateOutcome,
)
from desktop.core.state import atomic_write_json
from desktop.devtools import resources_with_broken_bundle
from tests.integration.conftest import run_cli
from tests.support.server import LoopbackServer
from tests.support.shells import (
    Supervised,
    pid_alive,
    stage,
    stubborn_files,
    stubborn_pids,
    supervised_fixture,
    update,
    wait_dead,
)

Publish = Callable[..., Path]
Config = Callable[..., AppConfig]
Make = Callable[..., Supervised]


@pytest.fixture
def supervised() -> Iterator[Make]:
    yield from supervised_fixture()


def launch(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "desktop", "launch", *args, "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_bundled_launch_on_fresh_data_dir(data_dir: Path) -> None:
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["ready"] is True and obj["source"] == "bundled" and obj["version"] == "1.0.0"
    assert obj["url"].startswith("http://127.0.0.1:")
    assert wait_dead(obj["pid"]), "--until-ready stops the runtime"
    assert (data_dir.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o077) == 0 for p in data_dir.rglob("*") if p.is_file())


def test_staged_launch_commits_known_good(server: LoopbackServer, publish: Publish, npm_config: Config,
                                          data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and not pointer.known_good
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert (obj["version"], obj["source"]) == ("1.1.0", "staged")
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.known_good


def test_crash_at_start_marks_bad_and_falls_back_to_last_known_good(
        server: LoopbackServer, publish: Publish, npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    stage(config, publish, "1.2.0", simulate="crash-at-start")
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert (obj["version"], obj["source"]) == ("1.1.0", "staged")
    assert obj["fallbacks"][0]["version"] == "1.2.0"
    assert "1.2.0 failed to start" in result.stderr
    bad = BadVersions(config.data.bad_file).load().entries[Version("1.2.0")]
    assert bad.reason == "exit code 17" and bad.exit_code == 17
    assert any("simulated crash" in line for line in bad.stderr_tail)
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0") and pointer.known_good
    # Never staged again...
    server.clear_requests()
    assert update(config).outcome is UpdateOutcome.BAD_VERSION
    assert not [r for r in server.requests if r.path.endswith(".tgz")]
    # ...while a newer good one is staged and launched.
    stage(config, publish, "1.3.0")
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(result.stdout)["version"] == "1.3.0"


def test_crash_without_known_good_falls_back_to_bundled(server: LoopbackServer, publish: Publish,
                                                        npm_config: Config, supervised: Make) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="exit-clean-at-start")
    run = supervised(config)
    event = run.start()
    assert isinstance(event, Running) and event.source == "bundled"
    assert BadVersions(config.data.bad_file).load().entries[Version("1.1.0")].reason == "exit code 0"
    assert read_pointer(config.data.pointer_file) is None
    kinds = [type(e) for e in run.events]
    assert kinds == [Starting, StartFailed, Starting, Running], "events arrive in order"


def test_hang_at_start_times_out_and_is_marked_bad(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                   supervised: Make) -> None:
    config = npm_config(startup_timeout=1.5)
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    event = supervised(config).start()
    assert isinstance(event, Running) and event.source == "bundled"
    assert BadVersions(config.data.bad_file).load().entries[Version("1.1.0")].reason.startswith("timeout")


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_startup_timeout_must_be_a_positive_finite_number(server: LoopbackServer, publish: Publish,
                                                          npm_config: Config, data_dir: Path, value: str) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    before = config.data.pointer_file.read_bytes()
    result = run_cli("launch", "--until-ready", f"--startup-timeout={value}", "--data-dir", str(data_dir))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    env = run_cli("launch", "--until-ready", "--data-dir", str(data_dir), env={"DESKTOP_STARTUP_TIMEOUT": value})
    assert env.returncode == 2 and "DESKTOP_STARTUP_TIMEOUT" in env.stderr
    assert config.data.pointer_file.read_bytes() == before
    assert BadVersions(config.data.bad_file).load().entries == {}


def test_cli_startup_timeout_flag(server: LoopbackServer, publish: Publish, npm_config: Config,
                                  data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    started = time.monotonic()
    result = run_cli("launch", "--until-ready", "--json", "--startup-timeout", "1", "--data-dir", str(data_dir))
    assert result.returncode == 0 and json.loads(result.stdout)["source"] == "bundled"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("damage", ["entry-missing", "entry-truncated", "native", "file-size"])
def test_damaged_staged_version_is_not_blamed_and_is_restaged(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervised: Make, damage: str) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    vdir = config.data.version_dir(Version("1.1.0"))
    if damage == "entry-missing":
        (vdir / "app" / "main.py").unlink()
    elif damage == "entry-truncated":
        (vdir / "app" / "main.py").write_bytes(b"")
    elif damage == "native":
        (vdir / "textstats" / "libtextstats.so").write_bytes(b"not the bundled library")
    else:
        with open(vdir / "app" / "notes_page.py", "ab") as handle:
            handle.write(b"# more\n")
    run = supervised(config)
    event = run.start()
    assert isinstance(event, Running) and event.source == "bundled"
    assert read_pointer(config.data.pointer_file) is None, "the pointer is repaired"
    assert Version("1.1.0") not in BadVersions(config.data.bad_file).load(), "damage is not a bad release"
    assert not run.of(StartFailed), "a damaged version is never spawned"
    run.supervisor.stop()
    report = update(config)
    assert report.outcome is UpdateOutcome.STAGED and report.bytes_downloaded > 0
    assert isinstance(run.start(), Running) and run.supervisor.running is not None
    assert run.supervisor.running.version == Version("1.1.0")


def test_same_size_damage_found_after_a_crash_is_blamed_on_the_disk(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervised: Make) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    page = config.data.version_dir(Version("1.1.0")) / "app" / "notes_page.py"
    text = page.read_bytes()
    page.write_bytes(b"raise SystemExit(9)\n".ljust(len(text), b"#"))  # same size: only a full hash sees it
    time.sleep(0.3)  # damage done well before the start (a runtime's own writes come after it)
    run = supervised(config)
    event = run.start()
    assert isinstance(event, Running) and event.source == "bundled"
    failed = run.of(StartFailed)
    assert failed and failed[0].damaged and not failed[0].marked_bad
    assert BadVersions(config.data.bad_file).load().entries == {}
    assert not config.data.version_dir(Version("1.1.0")).exists(), "set aside for re-staging"
    assert update(config).outcome is UpdateOutcome.STAGED


def test_bundled_failure_is_reported_without_loop(tmp_path: Path, npm_config: Config, supervised: Make) -> None:
    resources = resources_with_broken_bundle(npm_config().resources, tmp_path / "resources", "crash-at-start")
    config = npm_config(resources=resources)
    run = supervised(config)
    event = run.start()
    assert isinstance(event, Failed) and "bundled runtime 1.0.0 failed to start" in event.message
    assert "simulated crash" in event.message
    assert [type(e) for e in run.events] == [Starting, Failed]
    assert BadVersions(config.data.bad_file).load().entries == {}


def test_rollback_and_bad_clear(server: LoopbackServer, publish: Publish, npm_config: Config,
                                data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    stage(config, publish, "1.2.0")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    result = run_cli("rollback", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"rolled_back": "1.2.0", "version": "1.1.0", "source": "staged"}
    assert BadVersions(config.data.bad_file).load().entries[Version("1.2.0")].reason == "rolled back by user"
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["version"] == "1.1.0"
    assert run_cli("rollback", "--data-dir", str(data_dir)).returncode == 0
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["source"] == "bundled"
    nothing = run_cli("rollback", "--json", "--data-dir", str(data_dir))
    assert nothing.returncode == 1 and "nothing to roll back" in nothing.stderr
    assert "nothing to roll back" in json.loads(nothing.stdout)["error"]
    cleared = run_cli("bad", "clear", "1.2.0", "--json", "--data-dir", str(data_dir))
    assert json.loads(cleared.stdout)["cleared"] == ["1.2.0"]
    assert Version("1.2.0") not in BadVersions(config.data.bad_file).load()


def test_early_crash_loop_after_ready_marks_bad(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                supervised: Make) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="crash-after-ready:0.3")
    run = supervised(config, backoff_base_s=0.1, early_to_bad=3)
    first = run.start()
    assert isinstance(first, Running) and first.version == Version("1.1.0")
    assert run.wait_for(lambda events: isinstance(events[-1], Running) and events[-1].source == "bundled")
    assert len(run.of(Crashed)) == 3
    assert BadVersions(config.data.bad_file).load().entries[Version("1.1.0")].reason.startswith("crash loop")


def test_late_crash_loop_is_not_restarted_for_ever(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                   supervised: Make) -> None:
    """Runs that last past the 'early' window but not long enough to count as healthy add up."""
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="crash-after-ready:0.8")
    run = supervised(config, backoff_base_s=0.05, early_s=0.2, stable_s=30, max_short_runs=4)
    run.start()
    assert run.wait_for(lambda events: isinstance(events[-1], Running) and events[-1].source == "bundled", 60)
    assert len(run.of(Crashed)) == 4
    assert "crash loop" in BadVersions(config.data.bad_file).load().entries[Version("1.1.0")].reason


def test_crash_loop_of_bundled_runtime_stops_restarts(tmp_path: Path, npm_config: Config,
                                                       supervised: Make) -> None:
    resources = resources_with_broken_bundle(npm_config().resources, tmp_path / "resources", "crash-after-ready:0.2")
    config = npm_config(resources=resources)
    run = supervised(config, backoff_base_s=0.05, max_short_runs=3)
    run.start()
    assert run.wait_for(lambda events: isinstance(events[-1], Failed))
    assert "keeps crashing" in run.of(Failed)[0].message
    time.sleep(0.5)
    assert len(run.of(Running)) == 3, "no restarts after the loop was stopped"


def test_concurrent_restarts_are_serialized_and_events_ordered(npm_config: Config, supervised: Make) -> None:
    run = supervised(npm_config())
    barrier = threading.Barrier(6)

    def call() -> None:
        barrier.wait()
        run.supervisor.restart()

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert isinstance(run.supervisor.wait_settled(120), Running)
    running = run.of(Running)
    assert len(running) == 6
    alive = [e.pid for e in running if pid_alive(e.pid)]
    assert alive == [running[-1].pid], "every superseded runtime was stopped"
    states = [e.state for e in run.events]
    for before, after in zip(states, states[1:], strict=False):
        assert not (before is RuntimeState.RUNNING and after is RuntimeState.CRASHED)
    assert run.supervisor.stop()
    assert run.supervisor.state is RuntimeState.STOPPED
    assert wait_dead(running[-1].pid)


@pytest.mark.parametrize("stopper", ["signal handler", "other thread"])
def test_stop_during_a_slow_start_is_prompt_and_not_a_crash(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervised: Make, stopper: str) -> None:
    config = npm_config(startup_timeout=60)
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    run = supervised(config)
    run.supervisor.start()
    assert run.wait_for(lambda events: any(isinstance(e, Starting) for e in events))
    time.sleep(0.5)
    started = time.monotonic()
    if stopper == "signal handler":
        previous = signal.signal(signal.SIGUSR1, lambda *_: run.supervisor.stop())
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
        finally:
            signal.signal(signal.SIGUSR1, previous)
    else:
        done: list[bool] = []
        thread = threading.Thread(target=lambda: done.append(run.supervisor.stop()))
        thread.start()
        thread.join(10)
        assert done == [True]
    assert time.monotonic() - started < 5
    assert isinstance(run.supervisor.wait_settled(10), Stopped)
    assert BadVersions(config.data.bad_file).load().entries == {}
    assert not config.data.attempt_file.exists()
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.parametrize("phase", ["starting", "running"])
def test_signals_stop_launch_promptly_in_every_phase(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                     data_dir: Path, sig: signal.Signals, phase: str) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="hang-at-start" if phase == "starting" else None)
    before = config.data.pointer_file.read_bytes()
    proc = launch(data_dir, "--json", "--startup-timeout", "60")
    assert proc.stdout is not None
    if phase == "running":
        runtime_pid = json.loads(proc.stdout.readline())["pid"]
    else:
        deadline = time.monotonic() + 20
        while "[shell] started" not in _read(data_dir / "logs" / "runtime.log") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        runtime_pid = None
    started = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - started < 5, "a signal stops launch promptly"
    assert "Traceback" not in err
    assert proc.returncode == (0 if phase == "running" else 1), err
    if runtime_pid is not None:
        assert wait_dead(runtime_pid, 5)
    assert BadVersions(config.data.bad_file).load().entries == {}, "nothing is marked bad"
    if phase == "starting":
        assert config.data.pointer_file.read_bytes() == before, "the pointer is unchanged"
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0")
    assert list((data_dir / "running").iterdir()) == [], "the lease is released"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_ctrl_c_twice_during_slow_starts_does_not_downgrade(server: LoopbackServer, publish: Publish,
                                                           npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    for _ in range(3):
        proc = launch(data_dir, "--startup-timeout", "60")
        deadline = time.monotonic() + 20
        while not config.data.attempt_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert BadVersions(config.data.bad_file).load().entries == {}
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0"), "quitting is not crashing"


def test_start_that_took_the_shell_down_counts_only_when_it_repeats(
        server: LoopbackServer, publish: Publish, npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    for round_ in range(2):
        proc = launch(data_dir, "--startup-timeout", "60")
        deadline = time.monotonic() + 20
        while f'"shell_pid": {proc.pid}' not in _read(config.data.attempt_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # the shell dies during the start: unexplained
        proc.communicate(timeout=20)
        if round_ == 0:
            assert BadVersions(config.data.bad_file).load().entries == {}, "one death is not enough"
    result = run_cli("launch", "--until-ready", "--json", "--startup-timeout", "60", "--data-dir", str(data_dir))
    assert json.loads(result.stdout)["source"] == "bundled", result.stderr
    assert "interrupted" in BadVersions(config.data.bad_file).load().entries[Version("1.1.0")].reason


def test_attempt_record_of_a_dead_shell_is_counted(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                   supervised: Make) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    atomic_write_json(config.data.attempt_file,
                      {"version": "1.1.0", "shell_pid": int(dead.stdout), "deaths": 1, "shell_start": 1})
    event = supervised(config).start()
    assert isinstance(event, Running) and event.source == "bundled"
    assert "interrupted" in BadVersions(config.data.bad_file).load().entries[Version("1.1.0")].reason


@pytest.mark.parametrize("mode", ["ready", "slow"])
def test_kill_9_of_the_shell_leaves_no_process_behind(server: LoopbackServer, publish: Publish, npm_config: Config,
                                                      data_dir: Path, mode: str) -> None:
    """A runtime that ignores its parent and its stop signals, with a child that escaped its group."""
    config = npm_config()
    stage(config, publish, "1.1.0", extra_files=stubborn_files(mode))
    proc = launch(data_dir, "--json", "--startup-timeout", "60")
    try:
        pids = stubborn_pids(data_dir)
        if mode == "ready":
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["version"] == "1.1.0"
        assert all(pid_alive(pid) for pid in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for pid in pids:
            assert wait_dead(pid, 10), f"process {pid} outlived the killed shell"
    finally:
        proc.kill()
        proc.communicate()


def test_sigterm_stops_a_stubborn_runtime_and_its_children(server: LoopbackServer, publish: Publish,
                                                           npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", extra_files=stubborn_files("ready"))
    proc = launch(data_dir, "--json")
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    pids = stubborn_pids(data_dir)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 5
    for pid in pids:
        assert wait_dead(pid, 5), f"process {pid} survived the stop"


def test_two_shells_on_one_data_dir_hold_separate_leases(server: LoopbackServer, publish: Publish,
                                                         npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    first = launch(data_dir, "--json")
    assert first.stdout is not None
    ready_first = json.loads(first.stdout.readline())
    assert ready_first["version"] == "1.1.0"
    second = launch(data_dir, "--json")
    assert second.stdout is not None
    json.loads(second.stdout.readline())
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert sorted(r["shell_pid"] for r in status["running"]) == sorted([first.pid, second.pid])
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=20)
    # The second shell's exit must not unprotect what the first still runs.
    stage(config, publish, "1.2.0")
    stage(config, publish, "1.3.0")
    assert run_cli("gc", "--data-dir", str(data_dir)).returncode == 0
    assert config.data.version_dir(Version("1.1.0")).is_dir(), "gc kept the version the first shell runs"
    assert pid_alive(ready_first["pid"])
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=20)
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["running"] == []


def test_status_shows_what_a_running_shell_runs(data_dir: Path) -> None:
    proc = launch(data_dir, "--json")
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
        assert [r["shell_pid"] for r in status["running"]] == [proc.pid]
        assert status["running"][0]["source"] == "bundled"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["running"] == []


def test_stale_lease_of_a_killed_shell_is_ignored(data_dir: Path) -> None:
    (data_dir / "running").mkdir(mode=0o700)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    atomic_write_json(data_dir / "running" / f"{int(dead.stdout)}.json",
                      {"shell_pid": int(dead.stdout), "version": "1.1.0", "source": "staged", "state": "running"})
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["running"] == []


def test_invalid_ready_url_is_a_startup_crash(server: LoopbackServer, publish: Publish, npm_config: Config,
                                              supervised: Make) -> None:
    config = npm_config()
    main = ('import json, time\nprint(json.dumps({"ready": True, "url": "file:///etc/passwd"}), flush=True)\n'
            'time.sleep(60)\n')
    stage(config, publish, "1.1.0", extra_files={"app/main.py": main.encode()})
    run = supervised(config)
    event = run.start()
    assert isinstance(event, Running) and event.source == "bundled"
    failed = run.of(StartFailed)
    assert failed and failed[0].outcome.kind is ExitKind.INVALID_READY
    entry = BadVersions(config.data.bad_file).load().entries[Version("1.1.0")]
    assert entry.reason.startswith("invalid ready line")


def test_long_stderr_before_a_crash_keeps_the_bad_list_small_and_readable(
        server: LoopbackServer, publish: Publish, npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    main = ("import sys\nfor i in range(25):\n    print('x' * 400000 + '\\x1b[31m\\r', file=sys.stderr)\n"
            "sys.exit(3)\n")
    stage(config, publish, "1.1.0", extra_files={"app/main.py": main.encode()})
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(result.stdout)["source"] == "bundled"
    assert config.data.bad_file.stat().st_size < 64 * 1024
    bad = BadVersions(config.data.bad_file).load()
    assert not bad.unknown and Version("1.1.0") in bad
    assert all(len(line) <= 500 and "\x1b" not in line and "\r" not in line
               for line in bad.entries[Version("1.1.0")].stderr_tail)
    again = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(again.stdout)["source"] == "bundled" and "failed to start" not in again.stderr


def test_unreadable_bad_list_never_relaunches_a_bad_version(server: LoopbackServer, publish: Publish,
                                                            npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    stage(config, publish, "1.2.0", simulate="crash-at-start")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    # 1.2.0 is bad. Now both copies of the list are lost and the pointer is moved to 1.2.0 again.
    config.data.bad_file.write_bytes(b"\x00garbage")
    BadVersions(config.data.bad_file).backup.write_bytes(b"{")
    atomic_write_json(config.data.pointer_file,
                      {"version": "1.2.0", "known_good": False, "last_known_good": "1.1.0"})
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(result.stdout)["version"] == "1.1.0", result.stderr


@pytest.mark.parametrize("name,content", [
    ("failures.json", {"transient": {"count": "3", "next_retry": "soon"}, "pinned": {"1.2.0": {"time": "x"}}}),
    ("last-check.json", {"time": "yesterday", "result": 5}),
    ("start-attempt.json", {"version": "1.1.0", "deaths": "many", "shell_pid": "me"}),
    ("current.json", {"version": "1.1.0", "known_good": "yes", "last_known_good": 7}),
    ("bad-versions.json", {"1.3.0": {"reason": 12, "exit_code": "x", "stderr_tail": "oops", "time": []}}),
    ("settings.json", {"channel": 5, "auto_update": "no", "check_interval_s": "daily"}),
])
def test_wrong_typed_state_files_never_give_a_traceback(server: LoopbackServer, publish: Publish,
                                                        npm_config: Config, data_dir: Path, name: str,
                                                        content: dict[str, object]) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    atomic_write_json(data_dir / name, content)
    registry = ["--registry", config.registry_url or "", "--registry-kind", "npm"]
    for args in (["status", "--json"], ["update", "--json", *registry], ["check", *registry],
                 ["launch", "--until-ready", "--json"], ["bad", "list"], ["gc"]):
        result = run_cli(*args, "--data-dir", str(data_dir))
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.returncode in (0, 1), (args, result.stderr)
        if "--json" in args:
            json.loads(result.stdout)


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs that the test can turn read-only (root ignores directory permissions)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_data_dir_still_launches(server: LoopbackServer, publish: Publish, npm_config: Config,
                                           read_only_mount: Path) -> None:
    data = read_only_mount / "data"
    config = npm_config(data=open_data_dir(data))
    stage(config, publish, "1.1.0")
    assert run_cli("launch", "--until-ready", "--data-dir", str(data)).returncode == 0  # the user's first run
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "1.1.0"
    assert "Traceback" not in result.stderr
    for command in (["update", "--registry", config.registry_url or "", "--registry-kind", "npm"], ["gc"]):
        failed = run_cli(*command, "--json", "--data-dir", str(data))
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert "error" in json.loads(failed.stdout)


def test_data_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for command in (["update"], ["status"], ["gc"], ["launch", "--until-ready"]):
        result = run_cli(*command, "--json", "--data-dir", str(blocker / "x"))
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "not a directory" in json.loads(result.stdout)["error"]


def test_unsafe_data_dir_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run_cli("status", "--json", "--data-dir", str(shared))
    assert result.returncode == 1 and "writable by group or others" in result.stderr
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 65534, 65534)
    result = run_cli("launch", "--until-ready", "--data-dir", str(other))
    assert result.returncode == 1 and "belongs to another user" in result.stderr
    assert list(other.iterdir()) == [], "nothing was written into it"


def test_relative_data_dir_keeps_runtime_data_outside_versions(server: LoopbackServer, publish: Publish,
                                                               npm_config: Config, tmp_path: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    work = tmp_path / "cwd"
    work.mkdir()
    relative = os.path.relpath(config.data.root, work)
    result = subprocess.run([sys.executable, "-m", "desktop", "launch", "--until-ready", "--json",
                             "--data-dir", relative], cwd=work, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert json.loads(result.stdout)["version"] == "1.1.0", result.stderr
    assert (config.data.root / "runtime-data").is_dir()
    assert not (config.data.version_dir(Version("1.1.0")) / relative).exists()


def test_runtime_output_cannot_forge_log_lines_or_exhaust_memory(
        server: LoopbackServer, publish: Publish, npm_config: Config, data_dir: Path) -> None:
    config = npm_config()
    main = (
        "import json, os, sys, time\n"
        "sys.stderr.write('\\r2026-01-01 00:00:00,000 [shell] started staged 9.9.9\\x1b[2K\\n')\n"
        "chunk = 'x' * (1 << 20)\n"
        "for _ in range(300):\n"  # 300 MB with no newline at all
        "    sys.stderr.write(chunk)\n"
        "sys.stderr.write('\\n'); sys.stderr.flush()\n"
        "print(json.dumps({'ready': True, 'url': 'http://127.0.0.1:9/'}), flush=True)\n"
        "time.sleep(60)\n")
    stage(config, publish, "1.1.0", extra_files={"app/main.py": main.encode()})
    proc = launch(data_dir, "--json", "--startup-timeout", "120")
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["version"] == "1.1.0"
    with open(f"/proc/{proc.pid}/status") as handle:
        peak_kb = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert peak_kb < 200 * 1024, f"the shell grew to {peak_kb // 1024} MB reading one endless line"
    log = (data_dir / "logs" / "runtime.log").read_text()
    forged = [line for line in log.splitlines() if line.startswith("2026-01-01")]
    assert forged == [], "a runtime cannot start a line of the shell's log"
    assert "\\x0d2026-01-01" in log and "\x1b" not in log
