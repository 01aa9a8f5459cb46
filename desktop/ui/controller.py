"""The window's side of the shell: the façade's runtime events and update work, as Qt signals.

Only `desktop.core.shell.Shell` (and its supervisor), the typed results and the errors are used;
the window renders what this emits. Nothing here blocks the GUI thread: every call that touches
the disk or the network runs on a daemon thread and reports back through a queued signal (so
quitting never waits for a stalled registry), and stopping the runtime on quit happens on a
thread of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from packaging.version import Version
from PySide6.QtCore import QObject, QTimer, Signal

from desktop.core.errors import DesktopError
from desktop.core.results import (
    BadEntry,
    BlockEntry,
    CheckReport,
    ClearReport,
    LastCheck,
    Phase,
    PolicyInfo,
    Problem,
    Progress,
    ReleaseInfo,
    RollbackReport,
    Running,
    RuntimeEvent,
    RuntimeState,
    ShellInfo,
    ShellUpdateReport,
    ShellUpdates,
    StagedWaiting,
    StartFailed,
    Starting,
    UpdateOutcome,
    UpdateReport,
    UpdateState,
)
from desktop.core.shell import Settings, Shell, one_line
from desktop.ui.transfer import Transfer, TransferMeter

log = logging.getLogger(__name__)

QUIT_STOP_S = 2.0  # then the supervisor kills the runtime's process group: quitting stays under 3 s
CONFIRM_MS = 8000  # how long "You're up to date" stays after a check the user asked for
REMINDER_POLL_MS = 3600 * 1000
PROGRESS_EVERY_S = 0.1  # progress reaches the GUI at most this often


@dataclass(frozen=True)
class UpdateView:
    """Everything the window shows about updates, as one snapshot."""

    state: UpdateState = UpdateState.IDLE
    release: ReleaseInfo | None = None  # the release offered or staged
    notes: tuple[ReleaseInfo, ...] = ()  # notes of every version the update passes over, newest first
    transfer: Transfer | None = None
    phase: Phase | None = None
    problem: Problem | None = None
    detail: str = ""  # the technical reason, for Copy details only
    retry_at: float | None = None  # when the next automatic check retries a failure
    last_checked: float | None = None
    confirmed: bool = False  # a check the user asked for found nothing new: say so, briefly
    manual: bool = False  # the work under way was asked for by the user
    cancelled: bool = False
    managed: bool = False  # runtime updates are turned off by the admin policy


@dataclass(frozen=True)
class AppView:
    """The app itself as the window shows it: its own updates, what runs at its next start, what failed
    to start, and the admin policy."""

    policy: PolicyInfo
    info: ShellInfo | None = None  # read off the GUI thread: None until then
    problem: Problem | None = None  # the last update of the app itself failed
    detail: str = ""

    @property
    def pending(self) -> Version | None:
        """A newer app, staged: it runs at the next start (or now, with "Restart to update")."""
        return self.info.pending if self.info is not None else None

    @property
    def restart_exit_code(self) -> int | None:
        """Exit with it and the launcher starts the pending app (None: not started by a launcher)."""
        return self.info.restart_exit_code if self.info is not None and self.info.pending is not None else None

    @property
    def updatable(self) -> bool:
        """The app may update itself here (a per-user install that no policy or package manager owns)."""
        return self.info is not None and self.info.updates is ShellUpdates.AVAILABLE


@dataclass(frozen=True)
class Lists:
    """What the Updates panel lists, read off the GUI thread."""

    bad: tuple[BadEntry, ...] = ()
    blocked: tuple[BlockEntry, ...] = ()
    rollback: RollbackReport | None = None  # what Roll back would do now (None: nothing to roll back)


@dataclass(frozen=True)
class _Done:
    """A finished update job, with what the GUI thread needs to render it (read on the worker)."""

    result: CheckReport | UpdateReport | BaseException
    problem: Problem | None
    last_checked: float | None
    next_delay_s: float
    app: ShellUpdateReport | None = None  # the update of the app itself, when there was one
    app_problem: Problem | None = None
    info: ShellInfo | None = None  # the app as it stands after the update


@dataclass
class _Job:
    id: int
    manual: bool
    cancel: threading.Event


class _Throttle:
    """Lets progress through at most every PROGRESS_EVERY_S, but always a new phase and the end."""

    def __init__(self) -> None:
        self._last = 0.0
        self._phase: Phase | None = None

    def due(self, step: Progress) -> bool:
        now = time.monotonic()
        final = step.total is not None and step.done >= step.total
        if step.phase is self._phase and not final and now - self._last < PROGRESS_EVERY_S:
            return False
        self._last, self._phase = now, step.phase
        return True


class _Bridge(QObject):
    """Carries results from worker threads to the GUI thread (queued signals)."""

    done = Signal(object, object)  # callback, result
    runtime = Signal(object)  # RuntimeEvent from the supervisor's thread
    progress = Signal(int, object)  # job id, Progress
    stopped = Signal()


class ShellController(QObject):
    """Owns the supervisor and the update schedule; the window renders its signals."""

    runtime_event = Signal(object)  # RuntimeEvent, in the supervisor's order
    update_changed = Signal(object)  # UpdateView
    lists_changed = Signal(object)  # Lists
    check_finished = Signal(object)  # UpdateView after a check or update ended
    rollback_started = Signal(object)  # RollbackReport: what is being done
    rolled_back = Signal(object)  # RollbackReport: what was done
    skipped = Signal(object)  # Version the user skipped
    allowed = Signal(object)  # ClearReport: versions allowed again
    whats_new = Signal(object, object)  # Version now running, tuple[ReleaseInfo, ...]
    app_changed = Signal(object)  # AppView
    app_allowed = Signal(object)  # tuple[str, ...]: app versions that may start again
    reminder = Signal(object)  # StagedWaiting
    action_failed = Signal(str, object, str)  # what, Problem, technical detail
    stopped = Signal()  # quitting: the runtime is stopped

    def __init__(self, shell: Shell, *, initial_delay_s: float = 5.0, clock: Callable[[], float] = time.time,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.initial_delay_s = initial_delay_s
        self.clock = clock
        self.supervisor = shell.supervisor()
        self._bridge = _Bridge(self)
        self._bridge.done.connect(lambda callback, result: callback(result))
        self._bridge.runtime.connect(self._on_event)
        self._bridge.progress.connect(self._on_progress)
        self._bridge.stopped.connect(self.stopped)
        self.supervisor.add_listener(self._bridge.runtime.emit)
        self.view = UpdateView()
        self.lists = Lists()
        self.app = AppView(shell.policy_info())  # the policy is read with the configuration: no I/O here
        self.running: Running | None = None
        self.runtime_state = RuntimeState.STOPPED
        self.last_event: RuntimeEvent | None = None
        self.switching_to: RollbackReport | None = None  # a rollback under way
        self.shutting_down = False
        self._job: _Job | None = None
        self._jobs = 0
        self._meter = TransferMeter()
        self._last_reminded: float | None = None
        self._before_skip: UpdateView | None = None
        self.check_timer = QTimer(self)
        self.check_timer.setSingleShot(True)
        self.check_timer.timeout.connect(lambda: self.check_now(manual=False))
        self.confirm_timer = QTimer(self)
        self.confirm_timer.setSingleShot(True)
        self.confirm_timer.timeout.connect(self._end_confirmation)
        self.reminder_timer = QTimer(self)
        self.reminder_timer.timeout.connect(self.check_reminder)

    @property
    def config(self) -> Any:
        return self.shell.config

    @property
    def busy(self) -> bool:
        """A check or download is under way."""
        return self._job is not None

    @property
    def auto_update(self) -> bool:
        return bool(self.shell.config.settings.auto_update)

    @property
    def runtime_updates(self) -> bool:
        """Runtime updates are allowed (the admin policy can turn them off)."""
        return self.app.policy.runtime_updates

    @property
    def can_check(self) -> bool:
        """A check would do something now: a registry, no check under way, and something it may update."""
        return (self._job is None and not self.shutting_down and bool(self.shell.config.registry_url)
                and (self.runtime_updates or (self.auto_update and self.app.updatable)))

    # -- background work ----------------------------------------------------------------------
    def _in_background(self, job: Callable[[], Any], done: Callable[[Any], None], name: str = "shell-worker") -> None:
        """Run `job` on a daemon thread; `done(result or exception)` runs on the GUI thread."""
        def run() -> None:
            try:
                result: Any = job()
            except Exception as exc:  # delivered as a value and rendered there
                log.info("%s failed: %s", name, one_line(str(exc)))
                result = exc
            if not self.shutting_down:
                self._bridge.done.emit(done, result)
        threading.Thread(target=run, name=name, daemon=True).start()

    def _set_view(self, view: UpdateView) -> None:
        self.view = view
        self.update_changed.emit(view)

    # -- the runtime ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runtime and schedule the first update check; returns at once."""
        self.supervisor.start()
        self.reminder_timer.start(REMINDER_POLL_MS)
        self.refresh_lists()
        self.refresh_app()
        if self.shell.config.registry_url:
            if not self.runtime_updates:
                self._set_view(replace(self.view, state=UpdateState.DISABLED, managed=True))
            self.check_timer.start(int(self.initial_delay_s * 1000))
            shell = self.shell
            self._in_background(shell.last_check, self._on_last_check, "last-check")
        else:
            self._set_view(replace(self.view, state=UpdateState.DISABLED, problem=Problem.NOT_CONFIGURED))

    def _on_last_check(self, result: object) -> None:
        if self.view.last_checked is None and isinstance(result, LastCheck) and result.time:
            self._set_view(replace(self.view, last_checked=result.time))

    def restart_runtime(self) -> None:
        self.supervisor.restart()

    def restart_to_update(self) -> None:
        """Apply the staged version now, through the supervisor's single restart path."""
        self.supervisor.restart()

    def _on_event(self, event: RuntimeEvent) -> None:
        self.last_event = event
        self.runtime_state = event.state
        if isinstance(event, Running):
            self.running = event
            self.switching_to = None
            release = self.view.release
            if self.view.state is UpdateState.STAGED and release is not None and release.version <= event.version:
                self._set_view(replace(self.view, state=UpdateState.UP_TO_DATE, release=None, notes=(),
                                       transfer=None, confirmed=False))
            if event.source == "staged":
                self._look_for_whats_new(event.version)
            self.check_reminder()
        else:
            self.running = None
        if isinstance(event, StartFailed):
            release = self.view.release
            if release is not None and release.version == event.version:
                self._set_view(replace(self.view, state=UpdateState.UP_TO_DATE, release=None, notes=()))
        self.runtime_event.emit(event)
        if isinstance(event, Running | StartFailed) or (isinstance(event, Starting) and self.switching_to is None):
            self.refresh_lists()

    def _look_for_whats_new(self, version: Version) -> None:
        shell = self.shell

        def job() -> tuple[ReleaseInfo, ...]:
            notes = shell.whats_new(version)
            if notes:
                shell.whats_new_shown(version)  # once, even if the window is hidden in the tray
            return notes

        def done(notes: object) -> None:
            if isinstance(notes, tuple) and notes:
                self.whats_new.emit(version, notes)
        self._in_background(job, done, "whats-new")

    def check_reminder(self) -> None:
        """Remind, gently, of a staged update that has waited for days (the core decides when)."""
        running = self.running
        if running is None or self.shutting_down:
            return
        shell, last, now = self.shell, self._last_reminded, self.clock()

        def done(waiting: object) -> None:
            if isinstance(waiting, StagedWaiting):
                self._last_reminded = now
                self.reminder.emit(waiting)
        self._in_background(lambda: shell.staged_reminder(running.version, last_reminded=last, now=now), done,
                            "reminder")

    # -- updates ------------------------------------------------------------------------------
    def check_now(self, manual: bool = True) -> bool:
        """Check (and with automatic updates on, download and stage); False when it cannot start now."""
        return self._start_job(manual=manual, download=self.auto_update)

    def download_and_install(self) -> bool:
        """Download and stage the newest release now, whatever the automatic-update setting."""
        return self._start_job(manual=True, download=True)

    def _start_job(self, *, manual: bool, download: bool) -> bool:
        if self._job is not None or self.shutting_down or not self.shell.config.registry_url:
            return False
        if not self.runtime_updates and not (download and self.app.updatable):
            return False  # turned off by the admin: nothing a check could bring
        self._jobs += 1
        job = _Job(self._jobs, manual, threading.Event())
        self._job = job
        self.check_timer.stop()
        self.confirm_timer.stop()
        self._meter.reset()
        # With runtime updates turned off, only the app itself is updated: the window keeps saying
        # that updates are managed rather than "Checking for updates…".
        self._set_view(replace(self.view, state=UpdateState.CHECKING if self.runtime_updates else self.view.state,
                               manual=manual, problem=None, detail="", confirmed=False, cancelled=False,
                               transfer=None, phase=None))
        shell, bridge = self.shell, self._bridge
        throttle = _Throttle()

        def progress(step: Progress) -> None:
            if throttle.due(step):
                bridge.progress.emit(job.id, step)

        def work() -> _Done:
            result: CheckReport | UpdateReport | BaseException
            problem: Problem | None = None
            app: ShellUpdateReport | None = None
            app_problem: Problem | None = None
            info: ShellInfo | None = None
            try:
                if download:
                    report = shell.update_app(progress=progress, cancel=job.cancel.is_set, bypass_rollout=manual)
                    result, app = report.runtime, report.shell
                    if result.error is not None:
                        problem = shell.explain(result.error)
                    elif result.outcome is UpdateOutcome.BUSY:
                        problem = Problem.BUSY
                    if app.error is not None:
                        app_problem = shell.explain(app.error)
                    shell.keep_release_notes(result)
                    info = shell.shell_info()
                else:
                    result = shell.check(bypass_rollout=manual)
            except DesktopError as exc:
                result, problem = exc, shell.explain(exc)
            checked = shell.last_check()
            return _Done(result, problem, checked.time if checked else None, shell.next_check_delay(), app,
                         app_problem, info)

        self._in_background(work, lambda done: self._on_job_done(job, done), "update-check")
        return True

    def cancel_download(self) -> None:
        """Stop the check or download under way; the partial download is kept for resuming."""
        job = self._job
        if job is None:
            return
        job.cancel.set()
        self._job = None
        self._set_view(replace(self.view, state=self._resting_state(), transfer=None, phase=None, cancelled=True,
                               manual=False))
        self._schedule(self.shell.config.settings.check_interval_s)

    def _on_progress(self, job_id: int, step: Progress) -> None:
        job = self._job
        if job is None or job.id != job_id:
            return
        if step.phase is Phase.DOWNLOAD:
            transfer = self._meter.update(step.done, step.total)
            self._set_view(replace(self.view, state=UpdateState.DOWNLOADING, transfer=transfer, phase=step.phase))
        else:
            self._set_view(replace(self.view, state=UpdateState.INSTALLING, phase=step.phase))

    def _on_job_done(self, job: _Job, done: object) -> None:
        if not isinstance(done, _Done):  # the worker itself broke: say so, plainly
            done = _Done(done if isinstance(done, BaseException) else RuntimeError(str(done)), Problem.OTHER,
                         self.view.last_checked, self.shell.config.settings.check_interval_s)
        result = done.result
        current = self._job is not None and self._job.id == job.id
        staged = isinstance(result, UpdateReport) and result.outcome is UpdateOutcome.STAGED
        if not current and not staged:
            return  # cancelled: its outcome no longer matters
        if current:
            self._job = None
        if done.info is not None:
            self._set_app(replace(self.app, info=done.info, problem=done.app_problem,
                                  detail=one_line(str(done.app.error), 500) if done.app and done.app.error else ""))
        view = replace(self.view, last_checked=done.last_checked or self.view.last_checked, transfer=None,
                       phase=None, problem=done.problem, detail="", retry_at=None, cancelled=False)
        if isinstance(result, CheckReport):
            view = self._after_check(view, result)
        elif isinstance(result, UpdateReport):
            view = self._after_update(view, result)
        else:
            view = replace(view, state=self._failed_state(done.problem), detail=one_line(str(result), 500))
        self._schedule(done.next_delay_s)
        retry_at = self.clock() + max(done.next_delay_s, 1.0) if view.state in (UpdateState.OFFLINE,
                                                                               UpdateState.FAILED) else None
        view = replace(view, manual=False, retry_at=retry_at)
        self._set_view(view)
        if view.confirmed:
            self.confirm_timer.start(CONFIRM_MS)
        self.check_finished.emit(view)
        if staged:
            self.refresh_lists()

    def _after_check(self, view: UpdateView, report: CheckReport) -> UpdateView:
        if report.available is None:
            return replace(view, state=UpdateState.UP_TO_DATE, release=None, notes=(), confirmed=view.manual)
        return replace(view, state=UpdateState.AVAILABLE, release=report.available,
                       notes=Shell.release_notes(report, report.available.version) or (report.available,))

    def _after_update(self, view: UpdateView, report: UpdateReport) -> UpdateView:
        outcome = report.outcome
        running = self.running.version if self.running else None
        if outcome in (UpdateOutcome.STAGED, UpdateOutcome.ALREADY_STAGED) and report.version is not None \
                and (running is None or report.version > running):
            check = report.check
            release = check.available if check and check.available else ReleaseInfo(report.version, "")
            notes = (Shell.release_notes(check, report.version) if check else ()) or (release,)
            return replace(view, state=UpdateState.STAGED, release=release, notes=notes)
        if outcome is UpdateOutcome.CANCELLED:
            return replace(view, state=UpdateState.IDLE, cancelled=True, problem=None)
        if outcome is UpdateOutcome.DISABLED:
            return replace(view, state=UpdateState.DISABLED, managed=True)
        if outcome in (UpdateOutcome.FAILED, UpdateOutcome.BUSY):
            detail = one_line(str(report.error), 500) if report.error is not None else ""
            if report.version is not None:
                detail = f"{report.version}: {detail}" if detail else str(report.version)
            return replace(view, state=self._failed_state(view.problem), detail=detail)
        if view.state is UpdateState.STAGED and view.release is not None:
            return view  # a check found nothing newer than what already waits
        return replace(view, state=UpdateState.UP_TO_DATE, release=None, notes=(), confirmed=view.manual)

    def _resting_state(self) -> UpdateState:
        """The state once nothing is under way (a check was cancelled)."""
        if not self.runtime_updates:
            return UpdateState.DISABLED
        return UpdateState.AVAILABLE if self.view.release else UpdateState.IDLE

    @staticmethod
    def _failed_state(problem: Problem | None) -> UpdateState:
        return UpdateState.OFFLINE if problem in (Problem.OFFLINE, Problem.UNREACHABLE) else UpdateState.FAILED

    def _end_confirmation(self) -> None:
        if self.view.confirmed:
            self._set_view(replace(self.view, confirmed=False))

    def _schedule(self, delay_s: float) -> None:
        if not self.shutting_down and self.shell.config.registry_url:
            self.check_timer.start(int(max(delay_s, 1.0) * 1000))

    # -- the user's choices -----------------------------------------------------------------------
    def refresh_lists(self) -> None:
        shell = self.shell

        def job() -> Lists:
            return Lists(shell.bad_versions(), shell.blocked(), shell.rollback_preview())

        def done(lists: object) -> None:
            if isinstance(lists, Lists):
                self.lists = lists
                self.lists_changed.emit(lists)
        self._in_background(job, done, "lists")

    # -- the app itself ----------------------------------------------------------------------------
    def _set_app(self, app: AppView) -> None:
        self.app = app
        self.app_changed.emit(app)

    def refresh_app(self) -> None:
        """Read the app's own state (install, what runs next, what failed to start) off the GUI thread."""
        shell = self.shell

        def done(info: object) -> None:
            if isinstance(info, ShellInfo):
                self._set_app(replace(self.app, info=info))
        self._in_background(shell.shell_info, done, "app-info")

    def allow_app_again(self, version: str | None) -> None:
        """Let an app version that failed to start (or every one, with None) be staged and started again."""
        shell = self.shell

        def done(result: object) -> None:
            if isinstance(result, BaseException):
                self._failed(self.tr("Allow again"), result)
                return
            self.app_allowed.emit(result)
            self.refresh_app()
        self._in_background(lambda: shell.clear_bad_shell(version), done, "allow-app")

    def preview_rollback(self, then: Callable[[RollbackReport | None], None]) -> None:
        """What Roll back would do now, read fresh (the window asks the user with it)."""
        shell = self.shell

        def done(result: object) -> None:
            if isinstance(result, BaseException):
                self._failed(self.tr("Roll back"), result)
            else:
                then(result if isinstance(result, RollbackReport) else None)
        self._in_background(shell.rollback_preview, done, "rollback-preview")

    def roll_back(self, expected: RollbackReport) -> None:
        """Roll back (the user confirmed `expected`) and restart into the version rolled back to."""
        shell, supervisor = self.shell, self.supervisor
        self.switching_to = expected
        self._set_view(replace(self.view, state=UpdateState.IDLE if self.view.state is UpdateState.STAGED
                               else self.view.state, release=None, notes=(), confirmed=False))
        self.rollback_started.emit(expected)

        def job() -> RollbackReport:
            report = shell.rollback()
            supervisor.restart()
            return report

        def done(result: object) -> None:
            if isinstance(result, RollbackReport):
                self.rolled_back.emit(result)
            else:
                self.switching_to = None
                self._failed(self.tr("Roll back"), result)
            self.refresh_lists()
        self._in_background(job, done, "rollback")

    def skip_version(self, version: Version) -> None:
        """Never offer `version` again (undone from the Updates panel)."""
        shell = self.shell
        before = self.view

        def done(result: object) -> None:
            if isinstance(result, BaseException):
                self._failed(self.tr("Skip this version"), result)
                return
            self._before_skip = before
            if self.view.release is not None and self.view.release.version == version:
                self._set_view(replace(self.view, state=UpdateState.UP_TO_DATE, release=None, notes=()))
            self.skipped.emit(version)
            self.refresh_lists()
        self._in_background(lambda: shell.skip_version(str(version)), done, "skip")

    def allow_again(self, version: Version | str) -> None:
        """Undo a skip, a bad mark or a failed validation of `version` (every store that blocks it)."""
        shell = self.shell

        def done(result: object) -> None:
            if isinstance(result, BaseException):
                self._failed(self.tr("Allow again"), result)
                return
            before = self._before_skip
            if before is not None and before.release is not None and str(before.release.version) == str(version) \
                    and self.view.release is None and self._job is None:
                self._set_view(replace(before, manual=False, confirmed=False))  # the offer is back, as it was
            self._before_skip = None
            if isinstance(result, ClearReport):
                self.allowed.emit(result)
            self.refresh_lists()
        self._in_background(lambda: shell.clear_bad(str(version)), done, "allow")

    def apply_settings(self, settings: Settings) -> None:
        old = self.shell.config.settings
        shell = self.shell

        def done(result: object) -> None:
            if not isinstance(result, Shell):
                self._failed(self.tr("Settings"), result)
                return
            self.shell = result
            if settings.channel != old.channel:
                self.check_now(manual=True)
            elif settings.auto_update and not old.auto_update and self.view.state is UpdateState.AVAILABLE:
                self.download_and_install()
            elif settings.check_interval_s != old.check_interval_s and self._job is None:
                self._schedule(settings.check_interval_s)
            self._set_view(self.view)  # the wording depends on the settings
        self._in_background(lambda: shell.save_settings(settings), done, "settings")

    def _failed(self, what: str, error: object) -> None:
        exc = error if isinstance(error, BaseException) else RuntimeError(str(error))
        shell = self.shell

        def done(problem: object) -> None:
            self.action_failed.emit(what, problem if isinstance(problem, Problem) else Problem.OTHER,
                                    one_line(str(exc), 500))
        self._in_background(lambda: shell.explain(exc), done, "explain")

    # -- quitting -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel checks and downloads and stop the runtime; returns at once, `stopped` follows.

        A check stuck on a stalled registry is simply left behind (daemon thread, partial kept);
        the runtime is stopped on a thread of its own, so the window never waits.
        """
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("quitting")
        for timer in (self.check_timer, self.confirm_timer, self.reminder_timer):
            timer.stop()
        if self._job is not None:
            self._job.cancel.set()
        supervisor, bridge = self.supervisor, self._bridge

        def stop() -> None:
            try:
                supervisor.stop(timeout=QUIT_STOP_S)
                supervisor.close()
                log.info("quitting: the runtime is stopped")
            except Exception:  # quitting goes on whatever happened
                log.exception("stopping the runtime failed")
            finally:
                bridge.stopped.emit()
        threading.Thread(target=stop, name="quit", daemon=True).start()
