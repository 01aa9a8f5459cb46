"""The supervisor: launch with fallback, commit healthy starts, restart crashes, one restart path.

Every start, stop and restart goes through `Supervisor._transition`, serialized by one
lock per runtime, so the lifecycle state is always one of `RuntimeState` and never
two spawns are in flight.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.errors import DesktopError, InvalidReleaseError, LaunchError, StateError
from desktop.core.failures import backoff_delay
from desktop.core.process import ExitOutcome, RuntimeProcess
from desktop.core.selection import LaunchTarget, bundled_target, resolve_target, staged_target
from desktop.core.state import (
    BadVersions,
    Pointer,
    atomic_write_json,
    change_pointer,
    read_json_object,
    read_pointer,
    remove_file,
)

log = logging.getLogger(__name__)


class RuntimeState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    CRASHED = "crashed"
    FAILED = "failed"


@dataclass(frozen=True)
class RestartPolicy:
    """Crash-after-ready handling: exponential backoff, and a crash loop stops restarts."""

    max_crashes: int = 5
    window_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    early_crash_s: float = 10.0
    early_crashes_to_bad: int = 3
    max_interrupted_starts: int = 2


@dataclass(frozen=True)
class Running:
    """A runtime that printed its ready line."""

    target: LaunchTarget
    pid: int
    ready: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.ready, "version": str(self.target.version), "source": self.target.source}


@dataclass(frozen=True)
class StartFailure:
    """A staged version that failed to start and what replaced it."""

    version: Version
    outcome: ExitOutcome
    fallback: LaunchTarget


StateListener = Callable[[RuntimeState, dict[str, Any]], None]


class KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it (the map never leaks)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
            with self._guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


RESTART_LOCKS = KeyedLocks()


class Supervisor:
    """Runs one runtime for one data dir: start, stop, restart, crash handling."""

    def __init__(self, config: AppConfig, policy: RestartPolicy | None = None,
                 on_output: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.policy = policy or RestartPolicy()
        self.state = RuntimeState.STOPPED
        self.running: Running | None = None
        self.failures: list[StartFailure] = []
        self.last_error: str | None = None
        self.spawns_in_flight = 0
        self.max_spawns_in_flight = 0
        self._process: RuntimeProcess | None = None
        self._listeners: list[StateListener] = []
        self._on_output = on_output
        self._stopping = threading.Event()
        self._crash_times: list[float] = []
        self._early_crashes: dict[Version, int] = {}
        self._pending_bad: dict[Version, ExitOutcome] = {}
        self._generation = 0
        self._key = f"runtime:{config.data.root.resolve()}"

    # -- observation --------------------------------------------------------------------
    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _set_state(self, state: RuntimeState, **info: Any) -> None:
        self.state = state
        for listener in list(self._listeners):
            try:
                listener(state, info)
            except Exception:  # a broken listener must not break the supervisor
                log.exception("state listener failed")

    # -- the one restart path -----------------------------------------------------------
    def start(self) -> Running:
        """Start the runtime (no-op if it is running); raises LaunchError if nothing can start."""
        running = self._transition("start")
        assert running is not None
        return running

    def restart(self) -> Running:
        """Stop and start again: to apply an update, after a crash or a settings change."""
        running = self._transition("restart")
        assert running is not None
        return running

    def stop(self) -> None:
        self._stopping.set()
        self._transition("stop")

    def _transition(self, action: str) -> Running | None:
        if action != "stop":
            self._stopping.clear()
        with RESTART_LOCKS.hold(self._key):
            self._generation += 1
            if action in ("stop", "restart"):
                self._stop_locked()
            if action == "stop":
                self._set_state(RuntimeState.STOPPED)
                return None
            if action == "start" and self.running is not None and self._process and self._process.alive():
                return self.running
            return self._start_locked()

    # -- internals (lock held) ----------------------------------------------------------
    def _stop_locked(self) -> None:
        process, self._process, self.running = self._process, None, None
        if process is not None:
            process.stop()
        remove_file(self.config.data.running_file)

    def _start_locked(self) -> Running:
        self._retry_pending_marks()
        self._set_state(RuntimeState.STARTING)
        try:
            target = resolve_target(self.config, repair=True)
        except DesktopError as exc:
            self._fail(str(exc))
            raise
        target = self._check_interrupted_starts(target)
        while True:
            if self._stopping.is_set():
                self._set_state(RuntimeState.STOPPED)
                raise LaunchError("start cancelled: the shell is stopping")
            outcome, process = self._spawn_and_wait(target)
            if outcome is None and process is not None:
                return self._became_ready(target, process)
            assert outcome is not None
            if outcome.reason == "cancelled" or self._stopping.is_set():
                # Quitting during a start is not a crash: never mark a version bad for it.
                remove_file(self.config.data.attempt_file)
                self._set_state(RuntimeState.STOPPED)
                raise LaunchError("start cancelled: the shell is stopping")
            if target.is_bundled:
                tail = "\n".join(outcome.stderr_tail[-10:])
                self._fail(f"the bundled runtime {target.version} failed to start ({outcome.reason})"
                           + (f":\n{tail}" if tail else ""), outcome=outcome)
                raise LaunchError(f"the bundled runtime {target.version} failed to start ({outcome.reason})")
            target = self._handle_start_crash(target, outcome)

    def _spawn_and_wait(self, target: LaunchTarget) -> tuple[ExitOutcome | None, RuntimeProcess | None]:
        if target.source == "staged" and not self._is_committed(target.version):
            self._record_attempt(target.version)
        self.spawns_in_flight += 1
        self.max_spawns_in_flight = max(self.max_spawns_in_flight, self.spawns_in_flight)
        try:
            try:
                process = RuntimeProcess(self.config, target, self._on_output)
            except LaunchError as exc:
                return ExitOutcome(str(exc), None, []), None
            outcome = process.wait_ready(self.config.startup_timeout, self._stopping)
        finally:
            self.spawns_in_flight -= 1
        if outcome is None:
            return None, process
        return outcome, process

    def _became_ready(self, target: LaunchTarget, process: RuntimeProcess) -> Running:
        remove_file(self.config.data.attempt_file)
        if target.source == "staged":
            self._commit(target.version)
        running = Running(target, process.pid, dict(process.ready_payload or {}))
        self._process, self.running = process, running
        try:
            atomic_write_json(self.config.data.running_file, {
                "shell_pid": os.getpid(), "pid": process.pid, "version": str(target.version),
                "source": target.source, "url": running.ready.get("url"), "time": time.time()})
        except StateError as exc:
            log.warning("cannot record the running runtime: %s", exc)
        log.info("runtime %s (%s) ready at %s after %.2f s", target.version, target.source,
                 running.ready.get("url"), time.monotonic() - process.started_at)
        generation = self._generation
        threading.Thread(target=self._watch, args=(process, generation), daemon=True,
                         name=f"watch-{process.pid}").start()
        self._set_state(RuntimeState.RUNNING, version=str(target.version), source=target.source,
                        url=running.ready.get("url"), pid=process.pid)
        return running

    def _handle_start_crash(self, target: LaunchTarget, outcome: ExitOutcome) -> LaunchTarget:
        """Mark the version that actually ran bad, move the pointer back, pick the fallback."""
        log.warning("runtime %s crashed at startup: %s", target.version, outcome.reason)
        pointer_at_spawn = read_pointer(self.config.data.pointer_file)
        fallback = self._fallback_for(target.version, pointer_at_spawn)
        self._mark_bad(target.version, outcome, fallback)
        remove_file(self.config.data.attempt_file)
        self.failures.append(StartFailure(target.version, outcome, fallback))
        self._set_state(RuntimeState.STARTING, failed_version=str(target.version), reason=outcome.reason,
                        fallback=str(fallback.version), fallback_source=fallback.source)
        return fallback

    def _fallback_for(self, failed: Version, pointer: Pointer | None) -> LaunchTarget:
        """Last known-good if usable, else bundled — chosen explicitly, not from the pointer."""
        bad = BadVersions(self.config.data.bad_file).load()
        candidates = []
        if pointer is not None:
            if pointer.version != failed and pointer.known_good:
                candidates.append(pointer.version)
            if pointer.last_known_good is not None:
                candidates.append(pointer.last_known_good)
        bundled = bundled_target(self.config)
        for version in candidates:
            if version == failed or version in bad or version in self._pending_bad or version <= bundled.version:
                continue
            try:
                target = staged_target(self.config, version, f"last known-good {version}")
            except (InvalidReleaseError, OSError):
                continue
            return target
        return bundled

    def _mark_bad(self, version: Version, outcome: ExitOutcome, fallback: LaunchTarget) -> None:
        try:
            BadVersions(self.config.data.bad_file).mark(version, outcome.reason, outcome.exit_code,
                                                        outcome.stderr_tail)
        except StateError as exc:
            # Launch the fallback now; the mark is retried so the version is never re-staged in a loop.
            log.warning("cannot mark %s bad yet (%s); will retry", version, exc)
            self._pending_bad[version] = outcome
            return
        self._pending_bad.pop(version, None)
        new = Pointer(fallback.version, known_good=True) if fallback.source == "staged" else None
        change_pointer(self.config.data.pointer_file,
                       lambda now: new if now is not None and now.version == version else now)

    def _retry_pending_marks(self) -> None:
        for version, outcome in list(self._pending_bad.items()):
            pointer = read_pointer(self.config.data.pointer_file)
            self._mark_bad(version, outcome, self._fallback_for(version, pointer))

    def _is_committed(self, version: Version) -> bool:
        pointer = read_pointer(self.config.data.pointer_file)
        return pointer is not None and pointer.version == version and pointer.known_good

    def _commit(self, version: Version) -> None:
        """The first healthy start of a staged version marks it known-good."""
        def commit(now: Pointer | None) -> Pointer | None:
            if now is None or now.version != version or now.known_good:
                return now
            return Pointer(version, known_good=True, last_known_good=now.last_known_good)
        try:
            change_pointer(self.config.data.pointer_file, commit)
        except StateError as exc:
            log.warning("cannot commit %s as known-good: %s", version, exc)

    def _record_attempt(self, version: Version) -> None:
        previous = read_json_object(self.config.data.attempt_file) or {}
        count = 1
        if previous.get("version") == str(version):
            count = int(previous.get("count", 0) or 0) + 1
        atomic_write_json(self.config.data.attempt_file, {
            "version": str(version), "shell_pid": os.getpid(), "count": count, "time": time.time()})

    def _check_interrupted_starts(self, target: LaunchTarget) -> LaunchTarget:
        """A start that took the whole shell down left its attempt behind: count it."""
        previous = read_json_object(self.config.data.attempt_file) or {}
        if target.is_bundled or previous.get("version") != str(target.version):
            return target
        pid = previous.get("shell_pid")
        if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
            return target
        if int(previous.get("count", 0) or 0) < self.policy.max_interrupted_starts:
            return target
        outcome = ExitOutcome("startup interrupted: the shell died while starting it", None, [])
        return self._handle_start_crash(target, outcome)

    def _watch(self, process: RuntimeProcess, generation: int) -> None:
        outcome = process.wait_exit()
        if self._stopping.is_set() or generation != self._generation:
            return
        threading.Thread(target=self._after_crash, args=(process, outcome, generation), daemon=True).start()

    def _after_crash(self, process: RuntimeProcess, outcome: ExitOutcome, generation: int) -> None:
        now = time.monotonic()
        version = process.target.version
        uptime = now - process.started_at
        log.warning("runtime %s crashed after %.1f s: %s", version, uptime, outcome.reason)
        self._crash_times = [t for t in self._crash_times if now - t < self.policy.window_s] + [now]
        self._set_state(RuntimeState.CRASHED, version=str(version), reason=outcome.reason,
                        stderr_tail=outcome.stderr_tail)
        if process.target.source == "staged" and uptime < self.policy.early_crash_s:
            self._early_crashes[version] = self._early_crashes.get(version, 0) + 1
            if self._early_crashes[version] >= self.policy.early_crashes_to_bad:
                with RESTART_LOCKS.hold(self._key):
                    if generation != self._generation:
                        return
                    fallback = self._fallback_for(version, read_pointer(self.config.data.pointer_file))
                    self._mark_bad(version, ExitOutcome(
                        f"crash loop: {outcome.reason} {self._early_crashes[version]} times right after start",
                        outcome.exit_code, outcome.stderr_tail, before_ready=False), fallback)
                self._crash_times.clear()
        elif len(self._crash_times) >= self.policy.max_crashes:
            with RESTART_LOCKS.hold(self._key):
                if generation == self._generation:
                    self._process, self.running = None, None
                    self._fail(f"runtime {version} crashed {len(self._crash_times)} times in "
                               f"{self.policy.window_s:g} s ({outcome.reason}); not restarting", outcome=outcome)
            return
        delay = backoff_delay(len(self._crash_times), base=self.policy.backoff_base_s,
                              cap=self.policy.backoff_max_s)
        if self._stopping.wait(delay) or generation != self._generation:
            return
        try:
            self.restart()
        except DesktopError as exc:
            log.warning("restart after crash failed: %s", exc)

    def _fail(self, message: str, outcome: ExitOutcome | None = None) -> None:
        self.last_error = message
        self._set_state(RuntimeState.FAILED, error=message,
                        stderr_tail=outcome.stderr_tail if outcome else [])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
