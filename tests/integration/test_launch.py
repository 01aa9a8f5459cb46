"""Launch, fallback, commit, rollback and supervision with real runtime processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.errors import LaunchError
from desktop.core.stager import StageOutcome
from desktop.core.state import BadVersions, atomic_write_json, read_pointer
from desktop.core.supervisor import RESTART_LOCKS, RestartPolicy, RuntimeState, Supervisor
from desktop.core.updater import update
from desktop.devtools import resources_with_broken_bundle
from tests.integration.conftest import run_cli
from tests.support.server import LoopbackServer

Publish = Callable[..., Path]
Config = Callable[..., AppConfig]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def stage(config: AppConfig, publish: Publish, version: str, **kwargs: object) -> None:
    publish(version, **kwargs)
    assert update(config).outcome is StageOutcome.STAGED


@pytest.fixture
def supervisors() -> list[Supervisor]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.stop()


def make_supervisor(config: AppConfig, made: list[Supervisor], **policy: float) -> Supervisor:
    supervisor = Supervisor(config, RestartPolicy(**policy) if policy else None)  # type: ignore[arg-type]
    made.append(supervisor)
    return supervisor


def test_cli_bundled_launch_on_fresh_data_dir(data_dir: Path) -> None:
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["ready"] is True and obj["source"] == "bundled" and obj["version"] == "1.0.0"
    assert obj["url"].startswith("http://127.0.0.1:")
    assert wait_dead(obj["pid"]), "--until-ready stops the runtime"


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
    bad = BadVersions(config.data.bad_file).load()[Version("1.2.0")]
    assert bad.reason == "exit code 17" and bad.exit_code == 17
    assert any("simulated crash" in line for line in bad.stderr_tail)
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0") and pointer.known_good
    # Never staged again...
    server.clear_requests()
    assert update(config).outcome is StageOutcome.BAD_VERSION
    assert not [r for r in server.requests if r.path.endswith(".tgz")]
    # ...while a newer good one is staged and launched.
    stage(config, publish, "1.3.0")
    result = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(result.stdout)["version"] == "1.3.0"


def test_crash_without_known_good_falls_back_to_bundled(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervisors: list[Supervisor]) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="exit-clean-at-start")
    states: list[RuntimeState] = []
    supervisor = make_supervisor(config, supervisors)
    supervisor.add_listener(lambda state, info: states.append(state))
    running = supervisor.start()
    assert running.target.source == "bundled"
    assert BadVersions(config.data.bad_file).load()[Version("1.1.0")].reason == "exit code 0"
    assert read_pointer(config.data.pointer_file) is None
    assert states[0] is RuntimeState.STARTING and states[-1] is RuntimeState.RUNNING


def test_hang_at_start_times_out_and_is_marked_bad(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervisors: list[Supervisor]) -> None:
    config = npm_config(startup_timeout=1.5)
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    running = make_supervisor(config, supervisors).start()
    assert running.target.source == "bundled"
    assert BadVersions(config.data.bad_file).load()[Version("1.1.0")].reason.startswith("timeout")


def test_cli_startup_timeout_flag(server: LoopbackServer, publish: Publish, npm_config: Config,
                                  data_dir: Path) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    started = time.monotonic()
    result = run_cli("launch", "--until-ready", "--json", "--startup-timeout", "1", "--data-dir", str(data_dir))
    assert result.returncode == 0 and json.loads(result.stdout)["source"] == "bundled"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("damage", ["entry", "native"])
def test_damaged_staged_version_falls_back_and_is_restaged(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervisors: list[Supervisor],
        damage: str) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    vdir = config.data.version_dir(Version("1.1.0"))
    if damage == "entry":
        (vdir / "app" / "main.py").unlink()
    else:
        (vdir / "textstats" / "libtextstats.so").write_bytes(b"not the bundled library")
    supervisor = make_supervisor(config, supervisors)
    assert supervisor.start().target.source == "bundled"
    assert read_pointer(config.data.pointer_file) is None, "the pointer is repaired"
    assert Version("1.1.0") not in BadVersions(config.data.bad_file).load(), "damage is not a bad release"
    supervisor.stop()
    result = update(config)
    assert result.outcome is StageOutcome.STAGED and result.downloaded
    assert supervisor.start().target.version == Version("1.1.0")


def test_bundled_failure_is_reported_without_loop(tmp_path: Path, npm_config: Config,
                                                  supervisors: list[Supervisor]) -> None:
    resources = resources_with_broken_bundle(npm_config().resources, tmp_path / "resources", "crash-at-start")
    config = npm_config(resources=resources)
    states: list[RuntimeState] = []
    supervisor = make_supervisor(config, supervisors)
    supervisor.add_listener(lambda state, info: states.append(state))
    with pytest.raises(LaunchError, match="bundled runtime 1.0.0 failed to start"):
        supervisor.start()
    assert states == [RuntimeState.STARTING, RuntimeState.FAILED]
    assert supervisor.last_error is not None and "simulated crash" in supervisor.last_error
    assert BadVersions(config.data.bad_file).load() == {}


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
    assert BadVersions(config.data.bad_file).load()[Version("1.2.0")].reason == "rolled back by user"
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["version"] == "1.1.0"
    assert run_cli("rollback", "--data-dir", str(data_dir)).returncode == 0
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["source"] == "bundled"
    nothing = run_cli("rollback", "--data-dir", str(data_dir))
    assert nothing.returncode == 1 and "nothing to roll back" in nothing.stderr
    assert run_cli("bad", "clear", "1.2.0", "--data-dir", str(data_dir)).returncode == 0
    assert Version("1.2.0") not in BadVersions(config.data.bad_file).load()


def test_crash_after_ready_restarts_then_crash_loop_marks_bad(
        server: LoopbackServer, publish: Publish, npm_config: Config, supervisors: list[Supervisor]) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0", simulate="crash-after-ready:0.3")
    supervisor = make_supervisor(config, supervisors, backoff_base_s=0.1, early_crashes_to_bad=3)
    states: list[tuple[RuntimeState, dict[str, object]]] = []
    supervisor.add_listener(lambda state, info: states.append((state, info)))
    first = supervisor.start()
    assert first.target.version == Version("1.1.0")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if supervisor.running and supervisor.running.target.source == "bundled" \
                and supervisor.state is RuntimeState.RUNNING:
            break
        time.sleep(0.05)
    crashed = [info for state, info in states if state is RuntimeState.CRASHED]
    assert len(crashed) == 3
    assert supervisor.running is not None and supervisor.running.target.source == "bundled"
    assert BadVersions(config.data.bad_file).load()[Version("1.1.0")].reason.startswith("crash loop")


def test_crash_loop_of_bundled_runtime_stops_restarts(tmp_path: Path, npm_config: Config,
                                                       supervisors: list[Supervisor]) -> None:
    resources = resources_with_broken_bundle(npm_config().resources, tmp_path / "resources", "crash-after-ready:0.2")
    config = npm_config(resources=resources)
    supervisor = make_supervisor(config, supervisors, backoff_base_s=0.05, max_crashes=3, window_s=60)
    spawned: list[int] = []
    supervisor.add_listener(lambda state, info: spawned.append(1) if state is RuntimeState.RUNNING else None)
    supervisor.start()
    deadline = time.monotonic() + 30
    while supervisor.state is not RuntimeState.FAILED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervisor.state is RuntimeState.FAILED
    assert supervisor.last_error is not None and "crashed 3 times" in supervisor.last_error
    time.sleep(0.5)
    assert len(spawned) == 3, "no restarts after the loop was stopped"


def test_concurrent_restarts_are_serialized(npm_config: Config, supervisors: list[Supervisor]) -> None:
    supervisor = make_supervisor(npm_config(), supervisors)
    pids: list[int] = []
    supervisor.add_listener(lambda state, info: pids.append(int(str(info["pid"])))
                            if state is RuntimeState.RUNNING else None)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            supervisor.restart()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert supervisor.max_spawns_in_flight == 1
    assert supervisor.state is RuntimeState.RUNNING
    assert len(pids) == 6
    alive = [pid for pid in pids if pid_alive(pid)]
    assert alive == [pids[-1]], "every superseded runtime was stopped"
    assert len(RESTART_LOCKS) == 0, "the lock map does not leak"
    supervisor.stop()
    assert supervisor.state is RuntimeState.STOPPED
    assert wait_dead(pids[-1])


def test_no_orphan_when_the_shell_is_killed(data_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "launch", "--json", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        runtime_pid = json.loads(line)["pid"]
        assert pid_alive(runtime_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_dead(runtime_pid, 10), "the runtime must not outlive a killed shell"
    finally:
        proc.kill()
        proc.communicate()


def test_sigterm_stops_gracefully(data_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "launch", "--json", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    runtime_pid = json.loads(proc.stdout.readline())["pid"]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert wait_dead(runtime_pid, 5)
    log = (data_dir / "logs" / "runtime.log").read_text()
    assert "started bundled 1.0.0" in log


def test_start_that_took_the_shell_down_is_counted(server: LoopbackServer, publish: Publish,
                                                   npm_config: Config, supervisors: list[Supervisor]) -> None:
    config = npm_config()
    stage(config, publish, "1.1.0")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    atomic_write_json(config.data.attempt_file,
                      {"version": "1.1.0", "shell_pid": int(dead.stdout), "count": 2, "time": 0})
    running = make_supervisor(config, supervisors).start()
    assert running.target.source == "bundled"
    assert "interrupted" in BadVersions(config.data.bad_file).load()[Version("1.1.0")].reason


def test_quitting_during_start_is_not_a_crash(server: LoopbackServer, publish: Publish, npm_config: Config,
                                              supervisors: list[Supervisor]) -> None:
    config = npm_config(startup_timeout=30)
    stage(config, publish, "1.1.0", simulate="hang-at-start")
    supervisor = make_supervisor(config, supervisors)
    errors: list[BaseException] = []

    def starter() -> None:
        try:
            supervisor.start()
        except LaunchError as exc:
            errors.append(exc)

    thread = threading.Thread(target=starter)
    thread.start()
    time.sleep(1.0)
    supervisor.stop()
    thread.join(30)
    assert errors and "cancelled" in str(errors[0])
    assert BadVersions(config.data.bad_file).load() == {}
    assert not config.data.attempt_file.exists()
    assert supervisor.state is RuntimeState.STOPPED


def test_status_shows_what_a_running_shell_runs(data_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "launch", "--json", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
        assert status["running"]["pid"] == ready["pid"] and status["running"]["source"] == "bundled"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["running"] is None
