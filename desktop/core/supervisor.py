"""The supervisor: one thread owns the runtime's whole lifecycle.

Commands (start, restart, stop) go into an inbox and are carried out, one at a time, by the
supervisor's own thread, which is also the only thread that spawns (so the kernel's
parent-death signal, which follows the spawning thread, stays armed for the runtime's whole
life). Events are emitted from that thread, in order: a "crashed" can never arrive after a
newer "running".

`stop()` takes no lock: it bumps a counter, drops a byte into a pipe and polls until the
thread says the stop is done (or stops the process group itself after a few seconds). So it
is safe from a signal handler, another thread or a GUI slot, at any phase, and returns
within 5 s.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import logging.handlers
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from packaging.version import Version

from desktop.core import faults, policy
from desktop.core.attempts import StartAttempts
from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig
from desktop.core.errors import DesktopError, LaunchError, StateError
from desktop.core.launching import (
    LaunchTarget,
    bundled_target,
    resolve,
    staged_problem,
    staged_target,
    trusted_versions,
)
from desktop.core.leases import Leases
from desktop.core.pointer import Pointer, change_pointer, move_pointer_if, read_pointer
from desktop.core.process import RuntimeProcess, describe_status
from desktop.core.records import changed_by_runtime, read_record
from desktop.core.results import (
    Crashed,
    ExitKind,
    ExitOutcome,
    Failed,
    Running,
    RuntimeEvent,
    RuntimeState,
    StartFailed,
    Starting,
    Stopped,
)
from desktop.core.stagelock import Busy, stage_lock
from desktop.core.state import ensure_dir
from desktop.core.tree import remove_tree_quietly

log = logging.getLogger(__name__)

Listener = Callable[[RuntimeEvent], None]
STOP_GRACE_S = 3.0
STOPPED_FROM_OUTSIDE = frozenset({signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)})
STOP_TIMEOUT_S = 5.0
POLL_S = 0.25


class _Command(enum.Enum):
    START = "start"
    RESTART = "restart"
    STOP = "stop"
    CLOSE = "close"


@dataclass
class _Current:
    target: LaunchTarget
    process: RuntimeProcess
    running: Running


def output_logger(config: AppConfig) -> tuple[logging.Logger, logging.Handler]:
    """A logger for the runtime's output: logs/runtime.log (1 MB, 3 kept), or nowhere if unwritable."""
    logger = logging.getLogger(f"desktop.runtime-output.{id(config)}.{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler: logging.Handler
    try:
        ensure_dir(config.data.logs_dir)
        handler = logging.handlers.RotatingFileHandler(config.data.logs_dir / "runtime.log", maxBytes=1 << 20,
                                                       backupCount=3, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    except (OSError, StateError) as exc:
        log.warning("cannot write the runtime's log (%s); its output is not kept", exc)
        handler = logging.NullHandler()
    logger.addHandler(handler)
    return logger, handler


class Supervisor:
    """Runs one runtime for one data dir: start, stop, restart, crash handling."""

    def __init__(self, config: AppConfig, *, rules: policy.CrashRules | None = None,
                 on_output: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.rules = rules or policy.CrashRules()
        self.failures: list[StartFailed] = []
        self.last_error: str | None = None
        self._on_output = on_output
        self._listeners: list[Listener] = []
        # (sequence, command, stop generation when it was sent): a stop() issued after a start was
        # asked for interrupts that start, however long the supervisor took to get to it.
        self._inbox: collections.deque[tuple[int, _Command, int]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sent = 0
        self._handled = 0
        self._stop_gen = 0
        self._stop_done = 0
        self._state = RuntimeState.STOPPED
        self._last_event: RuntimeEvent | None = None
        self._current: _Current | None = None
        self._starting: RuntimeProcess | None = None
        self._restart_at: float | None = None
        self._history = policy.CrashHistory()
        self._restart_generation = 0
        self._pending_bad: dict[Version, ExitOutcome] = {}
        self._leases = Leases(config.data.leases_dir)
        self._attempts = StartAttempts(config.data.attempt_file, os.getpid())
        self._settled = threading.Condition()
        self._output, self._output_handler = output_logger(config)
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._spawn_lock = threading.Lock()
        self._closed = False

    # -- observation ----------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> RuntimeState:
        return self._state

    @property
    def running(self) -> Running | None:
        current = self._current
        return current.running if current is not None else None

    @property
    def last_event(self) -> RuntimeEvent | None:
        return self._last_event

    # -- commands -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runtime in the background (no-op if it runs)."""
        self._send(_Command.START)

    def restart(self) -> None:
        """Stop and start again: the one path to apply an update or recover."""
        self._send(_Command.RESTART)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the runtime (an interrupted start never counts as a crash); True once stopped.

        Lock-free, so safe from a signal handler, another thread or a GUI slot.
        """
        self._stop_gen += 1
        generation = self._stop_gen
        if not self._thread.is_alive() and not self._inbox:
            return True  # never started (or closed): nothing runs
        self._send(_Command.STOP, spawn=False)
        if threading.current_thread() is self._thread:
            return True  # from a listener: the stop is carried out right after the current command
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stop_done >= generation or not self._thread.is_alive():
                break
            time.sleep(0.01)
        else:
            log.warning("the supervisor did not stop in %g s; stopping the runtime directly", timeout)
        if self._stop_done >= generation:
            return True
        # The supervisor's thread is stuck: SIGTERM the group ourselves. Not SIGKILL: the guardian
        # needs its grace period to stop what left the group.
        for process in (self._starting, self._current.process if self._current else None):
            if process is not None:
                process.signal_group(signal.SIGTERM)
        return False

    def close(self) -> None:
        """Stop the runtime and end the supervisor's thread."""
        self.stop()
        self._send(_Command.CLOSE, spawn=False)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(STOP_TIMEOUT_S)
        self._closed = True

    def wait_settled(self, timeout: float | None = None) -> RuntimeEvent | None:
        """Wait until every command sent so far is done and the runtime runs, failed or stopped."""
        target = self._sent
        settled = (RuntimeState.RUNNING, RuntimeState.FAILED, RuntimeState.STOPPED)
        with self._settled:
            self._settled.wait_for(lambda: self._handled >= target and self._state in settled, timeout)
        return self._last_event

    def _send(self, command: _Command, *, spawn: bool = True) -> None:
        self._sent += 1
        self._inbox.append((self._sent, command, self._stop_gen))
        if spawn and not self._thread.is_alive() and not self._closed and command is not _Command.CLOSE:
            # Never taken by stop(): a signal handler must not wait on a lock.
            with self._spawn_lock:
                if self._thread.ident is None:
                    self._thread.start()
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _sleep(self, timeout: float) -> None:
        """Wait up to `timeout` for a poke; drain the pipe."""
        if timeout > 0:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._wake_r], [], [], timeout)
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    # -- the supervisor's thread ----------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                if self._inbox:
                    seq, command, generation = self._inbox.popleft()
                    if command is _Command.CLOSE:
                        self._stop_runtime()
                        return
                    self._handle(command, generation)
                    self._mark_handled(seq)
                    continue
                self._watch()
        except Exception:
            log.exception("the supervisor failed")
            self._stop_runtime()
            self._emit(Failed("the supervisor failed; restart the app"))
        finally:
            self._output_handler.close()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _handle(self, command: _Command, generation: int) -> None:
        if command is _Command.STOP:
            generation = self._stop_gen
            self._stop_runtime()
            self._state = RuntimeState.STOPPED
            self._stop_done = generation  # before the listeners: stop() may be waiting in a signal handler
            self._emit(Stopped())
            return
        if command is _Command.START and self._current is not None and self._current.process.poll() is None:
            return
        self._stop_runtime()
        self._start(generation=generation)

    def _mark_handled(self, seq: int) -> None:
        with self._settled:
            self._handled = max(self._handled, seq)
            self._settled.notify_all()

    def _watch(self) -> None:
        """Idle: watch the running process and a pending restart; wake on any command."""
        current = self._current
        now = time.monotonic()
        if current is not None and current.process.poll() is not None:
            self._after_crash(current)
            return
        if self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._start(generation=self._restart_generation)
            return
        timeout = POLL_S if current is not None else 3600.0
        if self._restart_at is not None:
            timeout = min(timeout, max(self._restart_at - now, 0.0))
        self._sleep(timeout)

    def _emit(self, event: RuntimeEvent) -> None:
        self._state = event.state
        self._last_event = event
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the supervisor
                log.exception("runtime listener failed")
        with self._settled:
            self._settled.notify_all()

    # -- starting -------------------------------------------------------------------------
    def _start(self, target: LaunchTarget | None = None, *, generation: int) -> None:
        """Start `target` (or what the launch rules pick); `generation` is the stop generation the start
        was asked under: any stop() since then interrupts it."""
        self._retry_pending_marks()
        self._leases.clean_stale()
        if target is None:
            try:
                target = resolve(self.config, repair=True)
            except DesktopError as exc:
                self._fail(str(exc))
                return
        while True:
            if self._stop_gen != generation:
                self._emit(Stopped(interrupted_start=True))
                return
            self._emit(Starting(target.version, target.source))
            uncommitted = target.source == "staged" and not self._is_committed(target.version)
            deaths = 0
            if uncommitted:
                deaths = self._attempts.deaths_before(target.version)
                if policy.interrupted_start_is_crash(deaths, self.rules):
                    died = ExitOutcome(ExitKind.EXITED, f"startup interrupted: the shell died while starting it "
                                                        f"{deaths} times")
                    self._attempts.clear()
                    next_target = self._start_failed_or_fail(target, died)
                    if next_target is None:
                        return
                    target = next_target
                    continue
                self._attempts.begin(target.version, deaths)
            self._leases.hold(target.version, target.source, "starting")
            ended, process = self._spawn_and_wait(target, generation)
            if process is not None:
                if uncommitted:
                    self._attempts.clear()
                self._became_ready(target, process)
                return
            assert ended is not None
            outcome = ended
            if outcome.kind is ExitKind.INTERRUPTED:
                # Quitting during a start is nobody's failure: restore the attempt record as it was.
                if uncommitted:
                    self._attempts.interrupted(target.version, deaths)
                self._leases.release()
                self._emit(Stopped(interrupted_start=True))
                return
            if uncommitted:
                self._attempts.clear()
            if target.is_bundled:
                tail = "\n".join(outcome.stderr_tail[-10:])
                self._leases.release()
                self._fail(f"the bundled runtime {target.version} failed to start ({outcome.reason})"
                           + (f":\n{tail}" if tail else ""), outcome, target.version)
                return
            next_target = self._start_failed_or_fail(target, outcome)
            if next_target is None:
                return
            target = next_target

    def _start_failed_or_fail(self, target: LaunchTarget, outcome: ExitOutcome) -> LaunchTarget | None:
        try:
            return self._start_failed(target, outcome)
        except DesktopError as exc:  # e.g. the bundled runtime, the last resort, is broken too
            self._leases.release()
            self._fail(str(exc), outcome, target.version)
            return None

    def _spawn_and_wait(self, target: LaunchTarget,
                        generation: int) -> tuple[ExitOutcome | None, RuntimeProcess | None]:
        try:
            process = RuntimeProcess(self.config, target, output=self._output, wake=self._poke,
                                     on_output=self._on_output)
        except LaunchError as exc:
            return ExitOutcome(ExitKind.SPAWN_FAILED, str(exc)), None
        self._starting = process
        try:
            deadline = time.monotonic() + self.config.startup_timeout
            while True:
                if process.ready_payload is not None:
                    return None, process
                if self._stop_gen != generation:
                    process.stop(grace=STOP_GRACE_S)
                    return ExitOutcome(ExitKind.INTERRUPTED, "start interrupted: the shell is stopping"), None
                tail = tuple(process.stderr_tail)
                if process.invalid_ready is not None:
                    process.stop(grace=1.0)
                    return ExitOutcome(ExitKind.INVALID_READY, process.invalid_ready, None, tail,
                                       process.uptime), None
                code = process.poll()
                if code is not None:
                    process.join_readers(1.0)  # the ready line may still be in the pipe
                    if process.ready_payload is not None:
                        return None, process
                    if self._stop_gen != generation:
                        return ExitOutcome(ExitKind.INTERRUPTED, "start interrupted: the shell is stopping"), None
                    if -code in STOPPED_FROM_OUTSIDE:
                        # A logout or `kill` stopped it (the guardian dies by the stop signal it got):
                        # not the version's fault.
                        return ExitOutcome(ExitKind.INTERRUPTED, f"start interrupted: {describe_status(code)} "
                                           "from outside the shell", code, tuple(process.stderr_tail)), None
                    return ExitOutcome(ExitKind.EXITED, describe_status(code), code, tuple(process.stderr_tail),
                                       process.uptime), None
                now = time.monotonic()
                if now >= deadline:
                    process.stop(grace=1.0)
                    return ExitOutcome(ExitKind.TIMEOUT,
                                       f"timeout ({self.config.startup_timeout:g} s without a ready line)",
                                       None, tuple(process.stderr_tail), process.uptime), None
                self._sleep(min(POLL_S, deadline - now))
        finally:
            self._starting = None

    def _became_ready(self, target: LaunchTarget, process: RuntimeProcess) -> None:
        if target.source == "staged":
            self._commit(target.version)
        payload = dict(process.ready_payload or {})
        url = payload.get("url") if isinstance(payload.get("url"), str) else None
        running = Running(target.version, target.source, url, process.pid, payload, process.token)
        self._current = _Current(target, process, running)
        self._leases.hold(target.version, target.source, "running", group=process.pid, url=url)
        log.info("runtime %s (%s) ready at %s after %.2f s", target.version, target.source, url, process.uptime)
        self._emit(running)

    def _start_failed(self, target: LaunchTarget, outcome: ExitOutcome) -> LaunchTarget:
        """The version that actually ran failed to start: blame it (or the disk), pick the fallback."""
        version = target.version
        log.warning("runtime %s failed to start: %s", version, outcome.reason)
        damaged = staged_problem(self.config, version, full=True)
        if damaged is not None:
            record = read_record(self.config.data.record_file(version))
            spawned = time.time() - outcome.uptime - 0.05
            changed = changed_by_runtime(target.directory, record, spawned) if record is not None else None
            if changed is not None:
                # The runtime wrote into its own version directory: that is the release's doing.
                outcome = ExitOutcome(outcome.kind, f"{outcome.reason}; it changed its own file {changed}",
                                      outcome.exit_code, outcome.stderr_tail, outcome.uptime)
                damaged = None
        pointer = read_pointer(self.config.data.pointer_file)
        fallback = self._fallback_for(version, pointer)
        if damaged is not None:
            log.warning("version %s no longer matches its staging record (%s): the disk is to blame, "
                        "not the release; it will be staged again", version, damaged)
            self._quarantine(version, fallback)
            marked = False
        else:
            marked = self._mark_bad(version, outcome, fallback)
        event = StartFailed(version, outcome, fallback.version, fallback.source, marked, damaged is not None)
        self.failures.append(event)
        self._emit(event)
        return fallback

    def _fallback_for(self, failed: Version, pointer: Pointer | None) -> LaunchTarget:
        bad = BadVersions(self.config.data.bad_file).load()
        trusted = trusted_versions(pointer)
        bundled = bundled_target(self.config)
        choice = policy.choose_fallback(
            failed, pointer, bundled=bundled.version,
            is_bad=lambda v: bad.is_bad(v, trusted=trusted) or v in self._pending_bad,
            usable=lambda v: staged_problem(self.config, v) is None)
        if choice is None:
            return bundled
        try:
            return staged_target(self.config, choice, f"last known-good {choice}")
        except LaunchError:
            return bundled

    def _mark_bad(self, version: Version, outcome: ExitOutcome, fallback: LaunchTarget) -> bool:
        """Mark first; move the pointer back only once the mark is durable. True if marked now."""
        try:
            BadVersions(self.config.data.bad_file).mark(version, outcome.reason, outcome.exit_code,
                                                        outcome.stderr_tail)
        except StateError as exc:
            # Launch the fallback now; the mark is retried, so the version is never re-staged in a loop.
            log.warning("cannot mark %s bad yet (%s); will retry", version, exc)
            self._pending_bad[version] = outcome
            return False
        self._pending_bad.pop(version, None)
        faults.reached("pointer-back")
        new = Pointer(fallback.version, known_good=True) if fallback.source == "staged" else None
        try:
            move_pointer_if(self.config.data.pointer_file, version, new)
        except StateError as exc:
            log.warning("cannot move the pointer back from %s: %s", version, exc)
        return True

    def _quarantine(self, version: Version, fallback: LaunchTarget) -> None:
        data = self.config.data
        new = Pointer(fallback.version, known_good=True) if fallback.source == "staged" else None
        try:
            move_pointer_if(data.pointer_file, version, new)
        except StateError as exc:
            log.warning("cannot move the pointer back from %s: %s", version, exc)
        if any(lease.version == version for lease in self._leases.live() if lease.shell_pid != os.getpid()):
            return  # another shell runs it: the next stage deals with it once it has stopped
        try:
            with stage_lock(data.runtimes):  # never while a stage is at work on it
                damaged = data.versions_dir / f"{version}.damaged-{os.getpid()}"
                os.rename(data.version_dir(version), damaged)
                remove_tree_quietly(damaged)
        except Busy:
            log.info("a stage is running; the damaged %s is left for it", version)
        except (OSError, DesktopError) as exc:
            log.warning("cannot set damaged version %s aside: %s", version, exc)

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

    # -- after ready ----------------------------------------------------------------------
    def _after_crash(self, current: _Current) -> None:
        generation = self._stop_gen
        process, target = current.process, current.target
        code = process.poll()
        process.join_readers(1.0)
        outcome = ExitOutcome(ExitKind.CRASHED, describe_status(code if code is not None else -9), code,
                              tuple(process.stderr_tail), process.uptime)
        self._current = None
        log.warning("runtime %s crashed after %.1f s: %s", target.version, outcome.uptime, outcome.reason)
        verdict = policy.crash_verdict(self._history, uptime=outcome.uptime, bundled=target.is_bundled,
                                       rules=self.rules)
        self._history = verdict.history
        if verdict.action is policy.CrashAction.RESTART:
            self._emit(Crashed(target.version, target.source, outcome, verdict.delay))
            self._restart_at = time.monotonic() + verdict.delay
            self._restart_generation = generation
            return
        self._emit(Crashed(target.version, target.source, outcome, None))
        if verdict.action is policy.CrashAction.GIVE_UP:
            self._leases.release()
            self._fail(f"runtime {target.version} keeps crashing ({verdict.reason}; last: {outcome.reason}); "
                       "not restarting", outcome, target.version)
            return
        self._history = policy.CrashHistory()
        looped = ExitOutcome(ExitKind.CRASHED, f"{verdict.reason} (last: {outcome.reason})", outcome.exit_code,
                             outcome.stderr_tail, outcome.uptime)
        fallback = self._start_failed_or_fail(target, looped)
        if fallback is not None:
            self._start(fallback, generation=generation)

    # -- stopping -------------------------------------------------------------------------
    def _stop_runtime(self) -> None:
        current, self._current = self._current, None
        self._restart_at = None
        if current is not None:
            current.process.stop(grace=STOP_GRACE_S)
        self._leases.release()

    def _fail(self, message: str, outcome: ExitOutcome | None = None, version: Version | None = None) -> None:
        self.last_error = message
        self._emit(Failed(message, outcome, version))
