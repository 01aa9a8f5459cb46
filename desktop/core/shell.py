"""The façade: the only core object the CLI and the window call.

    shell = Shell.open(data_dir=..., registry=...)
    shell.status() / check() / update() / rollback() / clear_bad(v) / collect_garbage()
    supervisor = shell.supervisor()        # start / restart / stop the runtime

Every method returns a typed result from desktop.core.results or raises a
desktop.core.errors type; the edges only render. Each method imports what it uses, so
`status` does not pay for httpx, TUF or the archive formats.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from packaging.version import Version

from desktop.core import policy
from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig, Settings, load_config
from desktop.core.errors import BusyError, DesktopError, LaunchError, NetworkError, StateError, UsageError
from desktop.core.failures import FailureMemory, SkippedVersions
from desktop.core.launching import bundled_target, resolve, staged_problem, staged_target, trusted_versions
from desktop.core.leases import Leases
from desktop.core.pointer import Pointer, move_pointer_if, read_pointer
from desktop.core.results import (
    AppUpdateReport,
    BadEntry,
    BlockEntry,
    CheckReport,
    ClearReport,
    GcReport,
    LastCheck,
    LeaseInfo,
    PolicyInfo,
    Problem,
    Progress,
    ReleaseInfo,
    RollbackReport,
    ShellInfo,
    ShellUpdateReport,
    ShellUpdates,
    StagedWaiting,
    StatusReport,
    TransientInfo,
    UpdateOutcome,
    UpdateReport,
)
from desktop.core.state import Fields, atomic_write_json, clip, load_fields
from desktop.core.text import one_line, redact_url
from desktop.core.versions import parse_version

if TYPE_CHECKING:
    import httpx

    from desktop.core.supervisor import Supervisor

log = logging.getLogger(__name__)

Cancel = Callable[[], bool]


class Shell:
    """Runs, updates and protects the runtime of one data dir."""

    def __init__(self, config: AppConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._transport = transport

    @classmethod
    def open(cls, **options: Any) -> Shell:
        """Load the configuration (shipped < settings < environment < these options) and check the data dir."""
        return cls(load_config(**options))

    # -- what is there ------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.config.data.root

    @property
    def logs_dir(self) -> Path:
        return self.config.data.logs_dir

    @property
    def registry_display(self) -> str | None:
        """The registry URL as it may be shown: credentials removed."""
        return redact_url(self.config.registry_url) if self.config.registry_url else None

    def status(self) -> StatusReport:
        from desktop.core.checkrecord import last_check

        config = self.config
        target = resolve(config, repair=False)
        pointer = read_pointer(config.data.pointer_file)
        bad = BadVersions(config.data.bad_file).load()
        memory = FailureMemory(config.data.failures_file)
        transient = memory.transient()
        leases = Leases(config.data.leases_dir).live()
        return StatusReport(
            version=target.version, source=target.source, reason=target.reason,
            directory=str(target.directory), shell_version=config.shell_version, data_dir=str(config.data.root),
            pointer=pointer.to_json() if pointer else None,
            bad=self.bad_versions(), bad_list_unknown=bad.unknown, blocked=self.blocked(),
            running=tuple(LeaseInfo(lease.shell_pid, lease.version, lease.source, lease.state, lease.url)
                          for lease in leases),
            last_check=last_check(config),
            transient=TransientInfo(transient.count, transient.last_error, transient.next_retry)
            if transient else None,
            registry=self.registry_display, channel=config.channel)

    def current(self) -> tuple[Version, str, str]:
        """What would launch now: (version, source, why)."""
        target = resolve(self.config, repair=False)
        return target.version, target.source, target.reason

    def bad_versions(self) -> tuple[BadEntry, ...]:
        bad = BadVersions(self.config.data.bad_file).load()
        return tuple(BadEntry(v, e.reason, e.exit_code, e.stderr_tail, e.time) for v, e in sorted(bad.entries.items()))

    def blocked(self) -> tuple[BlockEntry, ...]:
        """Versions kept from staging by something other than the bad list."""
        entries = [BlockEntry(v, "failed validation", p.reason, p.time)
                   for v, p in FailureMemory(self.config.data.failures_file).pinned().items()]
        entries += [BlockEntry(v, "skipped by the user", "skipped by the user", t)
                    for v, t in SkippedVersions(self.config.data.skipped_file).load().items()]
        return tuple(sorted(entries, key=lambda e: (e.version, e.store)))

    def can_roll_back(self) -> bool:
        return read_pointer(self.config.data.pointer_file) is not None

    # -- the registry ------------------------------------------------------------------------
    def check(self, *, bypass_rollout: bool = False) -> CheckReport:
        from desktop.core import updater

        if not self.config.policy.runtime_updates:
            return CheckReport(self.current()[0], None)
        with self._fetcher() as fetcher:
            registry = updater.open_registry(self.config, fetcher)
            return updater.check(self.config, registry, bypass_rollout=bypass_rollout).report

    def update(self, *, progress: Callable[[Progress], None] | None = None, cancel: Cancel | None = None,
               bypass_rollout: bool = False) -> UpdateReport:
        """Check and stage the newest usable release; expected failures come back as a report."""
        from desktop.core import updater

        if not self.config.policy.runtime_updates:
            return UpdateReport(UpdateOutcome.DISABLED, self.current()[0])
        with self._fetcher() as fetcher:
            try:
                self.config.data.check_writable()
                registry = updater.open_registry(self.config, fetcher)
            except UsageError:
                raise  # bad usage (a URL that is not https or loopback, no registry): exit 2, as for check
            except DesktopError as exc:
                return UpdateReport(UpdateOutcome.FAILED, None, error=exc, failure=policy.classify(exc))
            report = updater.update(self.config, registry, progress=progress, cancel=cancel,
                                    bypass_rollout=bypass_rollout, received=lambda: fetcher.bytes_received)
        if report.outcome is UpdateOutcome.STAGED:
            try:
                self.collect_garbage()
            except (DesktopError, OSError) as exc:
                log.info("garbage collection skipped: %s", exc)
        return report

    def _fetcher(self) -> Any:
        from desktop.core.download import Fetcher

        return Fetcher(self.config.net, transport=self._transport)

    def next_check_delay(self, *, rand: float | None = None, now: float | None = None) -> float:
        """Seconds until the next automatic check (interval with jitter, or backoff after failures)."""
        transient = FailureMemory(self.config.data.failures_file).transient()
        return policy.next_check_delay(
            interval=self.config.settings.check_interval_s, failures=transient.count if transient else 0,
            rand=random.random() if rand is None else rand,
            retry_at=transient.next_retry if transient else None, now=time.time() if now is None else now)

    # -- the user's choices -----------------------------------------------------------------
    def rollback(self) -> RollbackReport:
        """Pointer back to the previous known-good (or the bundled runtime); the version rolled back
        from is marked bad ("rolled back by user") so it is not staged again."""
        config = self.config
        pointer = read_pointer(config.data.pointer_file)
        if pointer is None:
            raise LaunchError("nothing to roll back: the bundled runtime is in use")
        bundled = bundled_target(config)
        bad = BadVersions(config.data.bad_file).load()
        trusted = trusted_versions(pointer)
        choice = policy.choose_fallback(pointer.version, pointer, bundled=bundled.version,
                                        is_bad=lambda v: bad.is_bad(v, trusted=trusted),
                                        usable=lambda v: staged_problem(config, v) is None)
        to = staged_target(config, choice, f"rolled back to {choice}") if choice is not None else bundled
        BadVersions(config.data.bad_file).mark(pointer.version, "rolled back by user")
        move_pointer_if(config.data.pointer_file, pointer.version,
                        Pointer(to.version, known_good=True) if to.source == "staged" else None)
        return RollbackReport(pointer.version, to.version, to.source)

    def clear_bad(self, version: str | None) -> ClearReport:
        """Clear every store that keeps `version` (or every version) from being staged or launched."""
        parsed: Version | None = None
        if version is not None:
            parsed = parse_version(version)
            if parsed is None:
                raise UsageError(f"{version!r} is not a valid version")
        stores: dict[str, tuple[str, ...]] = {}
        cleared = BadVersions(self.config.data.bad_file).clear(parsed)
        stores["bad"] = tuple(str(v) for v in cleared)
        stores["failed validation"] = tuple(str(v) for v in FailureMemory(self.config.data.failures_file)
                                            .clear(parsed))
        stores["skipped by the user"] = tuple(str(v) for v in SkippedVersions(self.config.data.skipped_file)
                                              .unskip(parsed))
        everything = sorted({Version(v) for names in stores.values() for v in names})
        return ClearReport(tuple(str(v) for v in everything), {k: v for k, v in stores.items() if v})

    def skip_version(self, version: str) -> None:
        parsed = parse_version(version)
        if parsed is None:
            raise UsageError(f"{version!r} is not a valid version")
        SkippedVersions(self.config.data.skipped_file).skip(parsed)

    def save_settings(self, settings: Settings) -> Shell:
        """Persist the user's settings; the returned shell uses them (a new channel included)."""
        settings.save(self.config.data.settings_file)
        channel = self.config.policy.channel or settings.channel  # a channel the admin pinned stays
        return Shell(replace(self.config, settings=settings, channel=channel), transport=self._transport)

    def collect_garbage(self) -> GcReport:
        from desktop.core.gc import collect
        from desktop.core.stagelock import Busy

        self.config.data.check_writable()
        try:
            return collect(self.config)
        except Busy:
            raise BusyError("another process is staging; try again later") from None

    # -- the shell itself (per-user installs) and the admin policy ----------------------------
    def policy_info(self) -> PolicyInfo:
        """The admin policy in force (what the window shows, and why settings are locked)."""
        from desktop.core.install import selfupdate

        return selfupdate.policy_info(self.config)

    def shell_info(self) -> ShellInfo:
        """The running shell: whether it can update itself, what runs at the next start, what failed."""
        from desktop.core.install import selfupdate

        return selfupdate.info(self.config)

    def update_shell(self, *, progress: Callable[[Progress], None] | None = None, cancel: Cancel | None = None,
                     bypass_rollout: bool = False, runtime_check: CheckReport | None = None) -> ShellUpdateReport:
        """Check for and stage a newer shell (or the one a newer runtime in `runtime_check` needs).
        STAGED (or ALREADY_STAGED) with `restart_exit_code` set: offer "Restart to update"."""
        from desktop.core.install import selfupdate

        with self._fetcher() as fetcher:
            return selfupdate.update(self.config, fetcher, progress=progress, cancel=cancel,
                                     bypass_rollout=bypass_rollout, runtime_check=runtime_check)

    def update_app(self, *, progress: Callable[[Progress], None] | None = None, cancel: Cancel | None = None,
                   bypass_rollout: bool = False) -> AppUpdateReport:
        """Update the runtime (as `update`), then the shell; a newer runtime that needs a newer shell
        pulls that shell in, and is offered once the new shell runs."""
        runtime = self.update(progress=progress, cancel=cancel, bypass_rollout=bypass_rollout)
        if cancel is not None and cancel():
            return AppUpdateReport(runtime, self._shell_not_asked(UpdateOutcome.CANCELLED, None))
        if self.config.registry_kind == "feed" and isinstance(runtime.error, NetworkError):
            # the shell's releases are on the same feed, which could not be reached just now
            return AppUpdateReport(runtime, self._shell_not_asked(UpdateOutcome.FAILED, runtime))
        shell = self.update_shell(progress=progress, cancel=cancel, bypass_rollout=bypass_rollout,
                                  runtime_check=runtime.check)
        return AppUpdateReport(runtime, shell)

    def _shell_not_asked(self, outcome: UpdateOutcome, runtime: UpdateReport | None) -> ShellUpdateReport:
        from desktop.core.install.root import find_install_root
        from desktop.core.install.selfupdate import availability

        updates, reason = availability(self.config, find_install_root())
        if updates is not ShellUpdates.AVAILABLE:
            return ShellUpdateReport(UpdateOutcome.DISABLED, None, updates, reason)
        return ShellUpdateReport(outcome, None, updates, reason, error=runtime.error if runtime else None,
                                 failure=runtime.failure if runtime else None)

    def clear_bad_shell(self, version: str | None) -> tuple[str, ...]:
        """Let a shell that failed to start (or every one) be staged and started again."""
        from desktop.core.install.root import find_install_root
        from desktop.core.install.selfupdate import clear_bad

        parsed = parse_version(version) if version is not None else None
        if version is not None and parsed is None:
            raise UsageError(f"{version!r} is not a valid version")
        install = find_install_root()
        if install is None:
            raise UsageError("this copy of the app is not a per-user install: it has no shells of its own")
        return tuple(str(v) for v in clear_bad(install, parsed))

    @staticmethod
    def report_healthy() -> bool:
        """Tell the launcher this shell started fine (the window is up, or the command was reached)."""
        from desktop.core.install.health import report_healthy

        return report_healthy()

    # -- the runtime -----------------------------------------------------------------------
    def supervisor(self, *, on_output: Callable[[str, str], None] | None = None,
                   rules: policy.CrashRules | None = None) -> Supervisor:
        from desktop.core.supervisor import Supervisor

        return Supervisor(self.config, rules=rules, on_output=on_output)

    # -- for the window: plain-words failures, what waits, what's new --------------------------
    def explain(self, error: BaseException) -> Problem:
        """What `error` means to the user (the words are the window's)."""
        host = urlsplit(self.config.registry_url or "").hostname or ""
        return policy.problem_of(error, online=host in LOOPBACK_NAMES or network_available())

    def last_check(self) -> LastCheck | None:
        from desktop.core.checkrecord import last_check

        return last_check(self.config)

    def rollback_preview(self) -> RollbackReport | None:
        """What `rollback()` would do now, without doing it (None: the bundled runtime is in use)."""
        config = self.config
        pointer = read_pointer(config.data.pointer_file)
        if pointer is None:
            return None
        bundled = bundled_target(config)
        bad = BadVersions(config.data.bad_file).load()
        trusted = trusted_versions(pointer)
        choice = policy.choose_fallback(pointer.version, pointer, bundled=bundled.version,
                                        is_bad=lambda v: bad.is_bad(v, trusted=trusted),
                                        usable=lambda v: staged_problem(config, v) is None)
        if choice is None:
            return RollbackReport(pointer.version, bundled.version, bundled.source)
        return RollbackReport(pointer.version, choice, "staged")

    def staged_reminder(self, running: Version | None, *, last_reminded: float | None,
                        now: float | None = None) -> StagedWaiting | None:
        """The staged update that has waited long enough for a gentle reminder, if any."""
        pointer = read_pointer(self.config.data.pointer_file)
        if pointer is None or running is None or pointer.version <= running or pointer.known_good:
            return None
        now = time.time() if now is None else now
        if not policy.staged_reminder_due(pointer.updated_at, now=now, last_reminded=last_reminded):
            return None
        return StagedWaiting(pointer.version, pointer.updated_at)

    def keep_release_notes(self, report: UpdateReport) -> None:
        """After a stage, keep the notes of every version it passes over, to show once it runs.

        A stage on top of another one that has not run yet adds to its notes: the user goes
        from the running version to the newest, past both.
        """
        check = report.check
        if report.outcome not in (UpdateOutcome.STAGED, UpdateOutcome.ALREADY_STAGED) \
                or report.version is None or check is None:
            return
        path = self.data_dir / WHATS_NEW_FILE
        fields = load_fields(path)
        kept = _kept_version(fields)
        earlier: list[ReleaseInfo] = []
        if not fields.flag("shown") and kept == check.current:
            earlier = _notes_from_json(fields.sequence("releases"))
        elif kept == report.version:
            return  # already kept for this version
        fresh = list(self.release_notes(check, report.version))
        merged = {r.version: r for r in earlier + fresh}
        releases = sorted(merged.values(), key=lambda r: r.version, reverse=True)[:MAX_WHATS_NEW]
        atomic_write_json(path, {
            "version": str(report.version), "shown": False,
            "releases": [{"version": str(r.version), "notes": clip(r.notes, MAX_NOTES_CHARS),
                          "published": clip(r.published, 64), "channel": clip(r.channel, 64)} for r in releases]})

    @staticmethod
    def release_notes(check: CheckReport, version: Version) -> tuple[ReleaseInfo, ...]:
        """The notes that come with going from the checked version to `version`, newest first."""
        return policy.notes_for(check.offered, current=check.current, target=version)

    def whats_new(self, running: Version) -> tuple[ReleaseInfo, ...]:
        """The notes to show once now that `running` runs: () when there are none or they were shown."""
        fields = load_fields(self.data_dir / WHATS_NEW_FILE)
        if fields.flag("shown") or _kept_version(fields) != running:
            return ()
        return tuple(_notes_from_json(fields.sequence("releases")))

    def whats_new_shown(self, version: Version) -> None:
        path = self.data_dir / WHATS_NEW_FILE
        fields = load_fields(path)
        if _kept_version(fields) == version and not fields.flag("shown"):
            atomic_write_json(path, {**fields.obj, "shown": True})


WHATS_NEW_FILE = "whats-new.json"
MAX_WHATS_NEW = 20
MAX_NOTES_CHARS = 8000
LOOPBACK_NAMES = frozenset({"127.0.0.1", "::1", "localhost"})


def _kept_version(fields: Fields) -> Version | None:
    text = fields.text("version")
    return parse_version(text) if text else None


def _notes_from_json(items: list[Any]) -> list[ReleaseInfo]:
    releases: list[ReleaseInfo] = []
    for item in items[:MAX_WHATS_NEW]:
        if not isinstance(item, dict):
            continue
        fields = Fields(item, WHATS_NEW_FILE)
        version = _kept_version(fields)
        if version is not None:
            releases.append(ReleaseInfo(version, fields.text("channel") or "", clip(fields.text("notes") or "",
                                        MAX_NOTES_CHARS), published=fields.text("published") or ""))
    return releases


def network_available() -> bool:
    """Whether this machine has a route off itself at all. A UDP connect only consults the
    routing table: nothing is sent (the addresses are reserved for documentation)."""
    for family, address in ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9))):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(address)
        except OSError:
            continue
        return True
    return False


def log_to_file(shell: Shell) -> Path | None:
    """Send the shell's own log to logs/desktop.log (rotated); None when the data dir is read-only."""
    from desktop.core.logfile import log_to_file as install

    return install(shell.config.data)


__all__ = ["Settings", "Shell", "StateError", "log_to_file", "one_line"]
