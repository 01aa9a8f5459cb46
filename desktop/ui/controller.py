"""The shell's brain on the GUI side: the façade's runtime events and updates, as Qt signals.

It calls only `desktop.core.shell.Shell` (and its supervisor), renders nothing itself, and
never blocks the GUI thread: checks and downloads run on daemon threads (quitting never waits
for a stalled registry), and stopping the runtime happens on the supervisor's own thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.core.errors import DesktopError
from desktop.core.results import (
    CheckReport,
    FailureClass,
    Progress,
    ReleaseInfo,
    Running,
    RuntimeEvent,
    StartFailed,
    UpdateOutcome,
    UpdateReport,
    UpdateState,
)
from desktop.core.shell import Settings, Shell, one_line

log = logging.getLogger(__name__)


class _Bridge(QObject):
    """Carries results from worker threads to the GUI thread (queued signals)."""

    done = Signal(object, object)  # callback, result
    runtime = Signal(object)  # RuntimeEvent from the supervisor's thread
    progress = Signal(object)  # Progress


class ShellController(QObject):
    """Owns the supervisor and the update schedule; the window only renders its signals."""

    runtime_changed = Signal(str, dict)  # RuntimeState value, info
    runtime_event = Signal(object)  # the typed RuntimeEvent
    update_changed = Signal(str, str)  # UpdateState value, text
    progress_changed = Signal(int)  # percent, -1 when unknown
    release_changed = Signal(dict)  # the available/staged release: version, notes, staged
    notification = Signal(str, str)  # title, message (tray balloon / status bar)
    check_finished = Signal(str)  # UpdateOutcome value or "checked"/"failed"
    stopped = Signal()  # the runtime is stopped after shutdown()

    def __init__(self, shell: Shell, *, initial_delay_s: float = 5.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.initial_delay_s = initial_delay_s
        self.supervisor = shell.supervisor()
        self._bridge = _Bridge(self)
        self._bridge.done.connect(lambda callback, result: callback(result))
        self._bridge.runtime.connect(self._on_event)
        self._bridge.progress.connect(self._on_progress)
        self.supervisor.add_listener(self._bridge.runtime.emit)
        self.cancel = threading.Event()
        self.checking = False
        self.staged: dict[str, Any] | None = None
        self.release: dict[str, Any] | None = None
        self.update_kind = UpdateState.IDLE.value
        self.update_text = "Not checked yet"
        self.notifications: list[tuple[str, str]] = []
        self.running: Running | None = None
        self._shutting_down = False
        self.check_timer = QTimer(self)
        self.check_timer.setSingleShot(True)
        self.check_timer.timeout.connect(lambda: self.check_now(manual=False))

    @property
    def config(self) -> Any:
        return self.shell.config

    # -- background work --------------------------------------------------------------------
    def _in_background(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        def run() -> None:
            try:
                result: Any = job()
            except Exception as exc:  # delivered to the GUI thread as a value, rendered there
                log.info("background job failed: %s", exc)
                result = exc
            if not self._shutting_down:
                self._bridge.done.emit(done, result)
        threading.Thread(target=run, name="update-worker", daemon=True).start()

    # -- runtime ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runtime in the background and schedule the first update check."""
        self.supervisor.start()
        if self.shell.config.registry_url:
            self.check_timer.start(int(self.initial_delay_s * 1000))
        else:
            self._set_update(UpdateState.DISABLED, "No update registry configured")

    def restart_runtime(self) -> None:
        self.supervisor.restart()

    def restart_to_update(self) -> None:
        """Apply a staged version now, through the supervisor's single restart path."""
        self.staged = None
        self.supervisor.restart()

    def _on_event(self, event: RuntimeEvent) -> None:
        info: dict[str, Any] = {}
        if isinstance(event, Running):
            self.running = event
            info = {"version": str(event.version), "source": event.source, "url": event.url, "pid": event.pid,
                    "token": event.token}
            if self.update_kind == UpdateState.STAGED.value and self.staged is None:
                self._set_update(UpdateState.UP_TO_DATE, "Up to date")
        elif isinstance(event, StartFailed):
            info = {"failed_version": str(event.version), "reason": event.outcome.reason,
                    "fallback": str(event.fallback), "fallback_source": event.fallback_source}
            what = "it was marked bad" if event.marked_bad else "its files were damaged; it will be downloaded again"
            self._notify(f"Version {event.version} did not start",
                         f"{event.version} crashed at startup ({one_line(event.outcome.reason, 120)}); {what}, "
                         f"and {event.fallback} ({event.fallback_source}) is running instead.")
        else:
            for key in ("version", "source", "message"):
                value = getattr(event, key, None)
                if value is not None:
                    info["error" if key == "message" else key] = str(value)
            outcome = getattr(event, "outcome", None)
            if outcome is not None:
                info["reason"] = outcome.reason
                info["stderr_tail"] = list(outcome.stderr_tail)
        self.runtime_event.emit(event)
        self.runtime_changed.emit(event.state.value, info)

    # -- updates ------------------------------------------------------------------------
    def check_now(self, manual: bool = True) -> None:
        """Check (and, with automatic updates on, download and stage) without blocking the GUI."""
        if self.checking or self._shutting_down or not self.shell.config.registry_url:
            return
        self.checking = True
        self.check_timer.stop()
        self._set_update(UpdateState.CHECKING, "Checking for updates…")
        shell = self.shell
        auto = shell.config.settings.auto_update
        cancel = self.cancel

        def job() -> UpdateReport | CheckReport:
            if not auto:
                return shell.check(bypass_rollout=manual)
            return shell.update(progress=self._bridge.progress.emit, cancel=cancel.is_set, bypass_rollout=manual)

        self._in_background(job, self._on_check_done)

    def _on_progress(self, progress: Progress) -> None:
        if progress.phase.value == "download":
            pct = int(progress.done * 100 / progress.total) if progress.total else -1
            self.progress_changed.emit(pct)
            self._set_update(UpdateState.DOWNLOADING,
                             f"Downloading update — {pct}%" if pct >= 0 else "Downloading update…")
        else:
            self.progress_changed.emit(-1)
            self._set_update(UpdateState.INSTALLING, "Installing update…")

    def _on_check_done(self, result: object) -> None:
        self.checking = False
        if isinstance(result, UpdateReport):
            self._after_update(result)
        elif isinstance(result, CheckReport):
            if result.available is not None:
                self._set_release(result.available, staged=False)
                self._set_update(UpdateState.AVAILABLE, f"Update {result.available.version} available")
            else:
                self._set_update(UpdateState.UP_TO_DATE, "Up to date")
            self.check_finished.emit("checked")
        else:
            self._set_update(UpdateState.FAILED, f"Check failed: {one_line(str(result), 120)}")
            self.check_finished.emit("failed")
        self._schedule_next()

    def _set_release(self, release: ReleaseInfo, *, staged: bool) -> None:
        self.release = {"version": str(release.version), "notes": release.notes, "staged": staged}
        if staged:
            self.staged = self.release
        self.release_changed.emit(self.release)

    def _after_update(self, report: UpdateReport) -> None:
        outcome = report.outcome
        if outcome in (UpdateOutcome.STAGED, UpdateOutcome.ALREADY_STAGED) and report.version is not None \
                and (self.running is None or report.version > self.running.version):
            available = report.check.available if report.check else None
            if available is not None:
                self._set_release(available, staged=True)
            self._set_update(UpdateState.STAGED, f"Update {report.version} ready — restart to update")
            self.progress_changed.emit(100)
            self._notify("Update ready", f"Version {report.version} is installed. Restart the runtime to use it.")
        elif outcome is UpdateOutcome.FAILED:
            if report.failure is FailureClass.TRANSIENT:
                self._set_update(UpdateState.OFFLINE, f"Offline — will retry ({one_line(str(report.error), 120)})")
            else:
                self._set_update(UpdateState.FAILED, f"Update failed: {one_line(str(report.error), 120)}")
        elif outcome is UpdateOutcome.BUSY:
            self._set_update(UpdateState.CHECKING, "Another process is installing an update")
        elif outcome is UpdateOutcome.BAD_VERSION:
            self._set_update(UpdateState.UP_TO_DATE, f"Up to date (newest release {report.version} is marked bad)")
        elif self.staged is None:
            self._set_update(UpdateState.UP_TO_DATE, "Up to date")
        self.check_finished.emit(outcome.value)

    def _schedule_next(self) -> None:
        if self._shutting_down:
            return
        self.check_timer.start(int(self.shell.next_check_delay() * 1000))

    def _set_update(self, state: UpdateState, text: str) -> None:
        self.update_kind, self.update_text = state.value, text
        self.update_changed.emit(state.value, text)

    def _notify(self, title: str, message: str) -> None:
        self.notifications.append((title, message))
        self.notification.emit(title, message)

    # -- rollback, bad versions, settings -----------------------------------------------
    def can_roll_back(self) -> bool:
        return self.shell.can_roll_back()

    def roll_back(self) -> None:
        shell, supervisor = self.shell, self.supervisor

        def job() -> object:
            report = shell.rollback()
            supervisor.restart()
            return report
        self._in_background(job, lambda result: None)

    def bad_versions(self) -> dict[str, Any]:
        return {str(entry.version): entry for entry in self.shell.bad_versions()}

    def clear_bad(self, version: str | None) -> None:
        try:
            self.shell.clear_bad(version)
        except DesktopError as exc:
            self._notify("Could not clear", one_line(str(exc), 200))

    def apply_settings(self, settings: Settings) -> None:
        old = self.shell.config.settings
        self.shell = self.shell.save_settings(settings)
        if settings.channel != old.channel:
            self.staged = None
            self.check_now(manual=True)
        elif settings.check_interval_s != old.check_interval_s and not self.checking:
            self._schedule_next()

    def current_version(self) -> str:
        if self.running is not None:
            return f"{self.running.version} ({self.running.source})"
        try:
            version, source, _ = self.shell.current()
        except DesktopError:
            return "unknown"
        return f"{version} ({source})"

    # -- quitting -----------------------------------------------------------------------
    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel downloads (partials are removed) and stop the runtime; waits on no registry."""
        self._shutting_down = True
        self.check_timer.stop()
        self.cancel.set()
        self.supervisor.close()
        self.stopped.emit()
