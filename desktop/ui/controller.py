"""The shell's brain on the GUI side: runtime supervision and silent updates, reported as signals."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.core.config import AppConfig, Settings
from desktop.core.errors import DesktopError, NetworkError, TransientError
from desktop.core.failures import FailureMemory
from desktop.core.selection import resolve_target, rollback
from desktop.core.stager import StageOutcome
from desktop.core.state import BadVersions, read_pointer
from desktop.core.supervisor import Running, Supervisor
from desktop.core.updater import UpdateResult, check, update
from desktop.ui.workers import Jobs, WorkerSignals

log = logging.getLogger(__name__)

MIN_RETRY_S = 30.0


class ShellController(QObject):
    """Owns the supervisor and the update schedule; the window only renders its signals."""

    runtime_changed = Signal(str, dict)  # RuntimeState value, info
    update_changed = Signal(str, str)  # kind (idle, checking, downloading, staged, offline, failed), text
    progress_changed = Signal(int)  # percent, -1 when unknown
    release_changed = Signal(dict)  # the available/staged release: version, notes
    notification = Signal(str, str)  # title, message (tray balloon / status bar)
    check_finished = Signal(str)  # outcome value or "failed"

    _supervisor_event = Signal(str, dict)

    def __init__(self, config: AppConfig, *, initial_delay_s: float = 5.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.initial_delay_s = initial_delay_s
        self.jobs = Jobs()
        self.supervisor = Supervisor(config)
        self.supervisor.add_listener(lambda state, info: self._supervisor_event.emit(state.value, dict(info)))
        self._supervisor_event.connect(self._on_supervisor_event)
        self.cancel = threading.Event()
        self.checking = False
        self.staged: dict[str, Any] | None = None
        self.release: dict[str, Any] | None = None  # the newest release seen: version, notes, staged
        self.update_kind = "idle"
        self.update_text = "Not checked yet"
        self.notifications: list[tuple[str, str]] = []
        self.running: Running | None = None
        self._shutting_down = False
        self._failures_seen = 0
        self.check_timer = QTimer(self)
        self.check_timer.setSingleShot(True)
        self.check_timer.timeout.connect(lambda: self.check_now(manual=False))

    # -- runtime ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runtime in the background and schedule the first update check."""
        self._run_supervisor("start")
        if self.config.registry_url:
            self.check_timer.start(int(self.initial_delay_s * 1000))
        else:
            self._set_update("idle", "No update registry configured")

    def restart_runtime(self) -> None:
        self._run_supervisor("restart")

    def restart_to_update(self) -> None:
        """Apply a staged version now, through the supervisor's single restart path."""
        self.staged = None
        self._run_supervisor("restart")

    def _run_supervisor(self, action: str) -> None:
        def job(signals: WorkerSignals) -> Running:
            return self.supervisor.start() if action == "start" else self.supervisor.restart()
        self.jobs.submit(job, finished=self._on_started, failed=self._on_start_failed)

    def _on_started(self, running: Running) -> None:
        self.running = running
        new_failures = self.supervisor.failures[self._failures_seen:]
        self._failures_seen = len(self.supervisor.failures)
        for failure in new_failures:
            self._notify(f"Version {failure.version} did not start",
                         f"{failure.version} crashed at startup ({failure.outcome.reason}); it was marked bad "
                         f"and {failure.fallback.version} ({failure.fallback.source}) is running instead.")
        if self.update_kind == "staged":
            self._set_update("idle", "Up to date")

    def _on_start_failed(self, error: object) -> None:
        log.warning("runtime start failed: %s", error)

    def _on_supervisor_event(self, state: str, info: dict[str, Any]) -> None:
        self.runtime_changed.emit(state, info)

    # -- updates ------------------------------------------------------------------------
    def check_now(self, manual: bool = True) -> None:
        """Check (and, with automatic updates on, download and stage) without blocking the GUI."""
        if self.checking or self._shutting_down or not self.config.registry_url:
            return
        self.checking = True
        self.check_timer.stop()
        self._set_update("checking", "Checking for updates…")
        config = self.config.with_overrides(manual_check=manual)
        auto = self.config.settings.auto_update

        def job(signals: WorkerSignals) -> UpdateResult | Any:
            if not auto:
                return check(config)

            def progress(phase: str, done: int, total: int | None) -> None:
                signals.progress.emit(phase, done, total if total is not None else -1)
            return update(config, progress=progress, cancel=self.cancel.is_set)

        self.jobs.submit(job, finished=self._on_check_done, failed=self._on_check_failed, progress=self._on_progress)

    def _on_progress(self, phase: str, done: int, total: int) -> None:
        if phase == "download":
            pct = int(done * 100 / total) if total > 0 else -1
            self.progress_changed.emit(pct)
            self._set_update("downloading", f"Downloading update — {pct}%" if pct >= 0 else "Downloading update…")
        elif phase == "extract":
            self.progress_changed.emit(-1)
            self._set_update("downloading", "Installing update…")

    def _on_check_done(self, result: Any) -> None:
        self.checking = False
        if isinstance(result, UpdateResult):
            self._after_update(result)
        else:  # a plain check (automatic updates off)
            if result.available is not None:
                release = result.available
                self.release = {"version": str(release.version), "notes": release.notes, "staged": False}
                self.release_changed.emit(self.release)
                self._set_update("available", f"Update {release.version} available")
            else:
                self._set_update("idle", "Up to date")
            self.check_finished.emit("checked")
        self._schedule_next()

    def _after_update(self, result: UpdateResult) -> None:
        outcome = result.outcome
        if outcome in (StageOutcome.STAGED, StageOutcome.ALREADY_STAGED) and result.version is not None \
                and (self.running is None or result.version > self.running.target.version):
            notes = result.check.available.notes if result.check and result.check.available else ""
            self.staged = {"version": str(result.version), "notes": notes, "staged": True}
            self.release = self.staged
            self.release_changed.emit(self.staged)
            self._set_update("staged", f"Update {result.version} ready — restart to update")
            self.progress_changed.emit(100)
            self._notify("Update ready", f"Version {result.version} is installed. Restart the runtime to use it.")
        elif outcome is StageOutcome.FAILED:
            error = result.error
            if isinstance(error, NetworkError):
                self._set_update("offline", f"Offline — will retry ({_short(error)})")
            else:
                self._set_update("failed", f"Update failed: {_short(error)}")
        elif outcome is StageOutcome.BUSY:
            self._set_update("checking", "Another process is installing an update")
        elif outcome is StageOutcome.BAD_VERSION:
            self._set_update("idle", f"Up to date (newest release {result.version} is marked bad)")
        elif self.staged is None:
            self._set_update("idle", "Up to date")
        self.check_finished.emit(outcome.value)

    def _on_check_failed(self, error: object) -> None:
        self.checking = False
        if isinstance(error, NetworkError | TransientError):
            self._set_update("offline", f"Offline — will retry ({_short(error)})")
        else:
            self._set_update("failed", f"Check failed: {_short(error)}")
        self.check_finished.emit("failed")
        self._schedule_next()

    def _schedule_next(self) -> None:
        if self._shutting_down:
            return
        interval = self.config.settings.check_interval_s
        transient = FailureMemory(self.config.data.failures_file).transient()
        if transient is not None:
            delay = max(MIN_RETRY_S, transient.next_retry - time.time())
            delay = min(delay, interval)
        else:
            delay = interval * random.uniform(0.9, 1.1)  # jitter: installs do not check in lockstep
        self.check_timer.start(int(delay * 1000))

    def _set_update(self, kind: str, text: str) -> None:
        self.update_kind, self.update_text = kind, text
        self.update_changed.emit(kind, text)

    def _notify(self, title: str, message: str) -> None:
        self.notifications.append((title, message))
        self.notification.emit(title, message)

    # -- rollback, bad versions, settings -----------------------------------------------
    def can_roll_back(self) -> bool:
        return read_pointer(self.config.data.pointer_file) is not None

    def roll_back(self) -> None:
        def job(signals: WorkerSignals) -> Running:
            rollback(self.config)
            return self.supervisor.restart()
        self.jobs.submit(job, finished=self._on_started, failed=self._on_start_failed)

    def bad_versions(self) -> dict[str, Any]:
        return {str(v): e for v, e in BadVersions(self.config.data.bad_file).load().items()}

    def clear_bad(self, version: str | None) -> None:
        from desktop.core.versions import parse_version

        BadVersions(self.config.data.bad_file).clear(parse_version(version) if version else None)
        FailureMemory(self.config.data.failures_file).clear(parse_version(version) if version else None)

    def apply_settings(self, settings: Settings) -> None:
        old = self.config.settings
        settings.save(self.config.data.settings_file)
        self.config = replace(self.config, settings=settings, channel=settings.channel)
        if settings.channel != old.channel:
            self.staged = None
            self.check_now(manual=True)
        elif settings.check_interval_s != old.check_interval_s and not self.checking:
            self._schedule_next()

    def current_version(self) -> str:
        if self.running is not None:
            return f"{self.running.target.version} ({self.running.target.source})"
        try:
            target = resolve_target(self.config, repair=False)
        except DesktopError:
            return "unknown"
        return f"{target.version} ({target.source})"

    # -- quitting -----------------------------------------------------------------------
    def shutdown(self, timeout_s: float = 15.0) -> None:
        """Stop gracefully: cancel downloads (partials are removed), stop the runtime."""
        self._shutting_down = True
        self.check_timer.stop()
        self.cancel.set()
        self.supervisor.stop()
        self.jobs.wait(int(timeout_s * 1000))


def _short(error: object) -> str:
    text = str(error).splitlines()
    return text[0] if text else type(error).__name__
