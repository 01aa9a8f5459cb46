"""What the core reports: typed outcomes, reasons, states and events (the edges render them).

Nothing here does I/O. The CLI turns these into JSON and text; the Qt controller re-emits
them as signals; nobody decides anything by matching message text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from desktop.core.errors import DesktopError


class UpdateOutcome(enum.Enum):
    STAGED = "staged"
    UP_TO_DATE = "up-to-date"
    ALREADY_STAGED = "already-staged"
    BAD_VERSION = "bad-version"
    BUSY = "busy"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DISABLED = "disabled"  # updates are turned off by policy


class SkipReason(enum.Enum):
    """Why a newer release was passed over."""

    BAD = "marked bad"
    PINNED = "failed validation before"
    HOST_GATE = "requires a different shell"
    ROLLOUT = "outside this install's rollout"
    CHANNEL = "on another channel"
    SKIPPED = "skipped by the user"
    POLICY = "not allowed by policy"
    BACKING_OFF = "retrying later"


class FailureClass(enum.Enum):
    TRANSIENT = "transient"  # retry with backoff, never pinned
    DETERMINISTIC = "deterministic"  # the release is invalid: pinned per version and digest
    TRUST = "trust"  # feed metadata refused: retried, the installed runtime keeps running
    CANCELLED = "cancelled"  # nobody's failure
    LOCAL = "local"  # this machine: the data dir, a state file, usage


class RuntimeState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    CRASHED = "crashed"
    FAILED = "failed"


class ExitKind(enum.Enum):
    """How a runtime process ended or failed to become ready."""

    EXITED = "exited"  # ended before its ready line
    TIMEOUT = "timeout"  # no ready line within the startup timeout
    INVALID_READY = "invalid ready line"
    INTERRUPTED = "interrupted"  # the shell was stopped during the start: not a crash
    SPAWN_FAILED = "spawn failed"
    CRASHED = "crashed"  # ended after ready
    STOPPED = "stopped"  # ended because the shell stopped it


class UpdateState(enum.Enum):
    """The update side as the window shows it."""

    IDLE = "idle"
    DISABLED = "disabled"
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    AVAILABLE = "available"  # found, not downloaded (automatic updates off)
    STAGED = "staged"  # downloaded, applies at the next start or "Restart to update"
    UP_TO_DATE = "up-to-date"
    OFFLINE = "offline"  # the registry cannot be reached: will retry
    FAILED = "failed"


class Phase(enum.Enum):
    """Progress phases of a stage."""

    DOWNLOAD = "download"
    EXTRACT = "extract"
    VERIFY = "verify"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    done: int
    total: int | None = None


@dataclass(frozen=True)
class ExitOutcome:
    """How one runtime process ended (or why it never became ready)."""

    kind: ExitKind
    reason: str
    exit_code: int | None = None
    stderr_tail: tuple[str, ...] = ()
    uptime: float = 0.0

    @property
    def is_crash(self) -> bool:
        return self.kind not in (ExitKind.INTERRUPTED, ExitKind.STOPPED)


@dataclass(frozen=True)
class Skip:
    version: Version
    reason: SkipReason
    detail: str = ""

    def describe(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


@dataclass(frozen=True)
class ReleaseInfo:
    """A release as the user sees it."""

    version: Version
    channel: str
    notes: str = ""
    size: int | None = None
    published: str = ""
    requires_shell: str | None = None


@dataclass(frozen=True)
class CheckReport:
    current: Version
    available: ReleaseInfo | None
    offered: tuple[ReleaseInfo, ...] = ()
    skipped: tuple[Skip, ...] = ()
    not_modified: bool = False
    bytes_received: int = 0
    notes_since_current: tuple[ReleaseInfo, ...] = ()


@dataclass(frozen=True)
class UpdateReport:
    outcome: UpdateOutcome
    version: Version | None
    check: CheckReport | None = None
    error: DesktopError | None = None
    failure: FailureClass | None = None
    pinned: bool = False
    bytes_downloaded: int = 0
    delta: bool = False
    retry_at: float | None = None


@dataclass(frozen=True)
class BadEntry:
    version: Version
    reason: str
    exit_code: int | None
    stderr_tail: tuple[str, ...]
    time: float


@dataclass(frozen=True)
class BlockEntry:
    """Something that keeps a version from being staged, other than the bad list."""

    version: Version
    store: str  # "failed validation", "skipped by the user"
    reason: str
    time: float = 0.0


@dataclass(frozen=True)
class LeaseInfo:
    shell_pid: int
    version: Version
    source: str
    state: str
    url: str | None


@dataclass(frozen=True)
class LastCheck:
    time: float
    result: str
    available: str | None
    error: str | None


@dataclass(frozen=True)
class TransientInfo:
    count: int
    last_error: str
    next_retry: float


@dataclass(frozen=True)
class StatusReport:
    version: Version
    source: str
    reason: str
    directory: str
    shell_version: str
    data_dir: str
    pointer: dict[str, Any] | None
    bad: tuple[BadEntry, ...]
    bad_list_unknown: bool
    blocked: tuple[BlockEntry, ...]
    running: tuple[LeaseInfo, ...]
    last_check: LastCheck | None
    transient: TransientInfo | None
    registry: str | None
    channel: str


@dataclass(frozen=True)
class RollbackReport:
    rolled_back: Version
    version: Version
    source: str


@dataclass(frozen=True)
class ClearReport:
    cleared: tuple[str, ...]  # versions no longer blocked
    stores: dict[str, tuple[str, ...]] = field(default_factory=dict)  # store -> versions cleared there


@dataclass(frozen=True)
class GcReport:
    removed: tuple[str, ...]
    kept: tuple[str, ...]
    problems: tuple[str, ...] = ()


# -- runtime events, delivered in order by the supervisor -------------------------------------

@dataclass(frozen=True)
class RuntimeEvent:
    """Base of the supervisor's events; `state` is the runtime's state after the event."""

    @property
    def state(self) -> RuntimeState:
        raise NotImplementedError


@dataclass(frozen=True)
class Starting(RuntimeEvent):
    version: Version
    source: str

    @property
    def state(self) -> RuntimeState:
        return RuntimeState.STARTING


@dataclass(frozen=True)
class Running(RuntimeEvent):
    version: Version
    source: str
    url: str | None
    pid: int
    ready: dict[str, Any]
    token: str = field(repr=False, default="")

    @property
    def state(self) -> RuntimeState:
        return RuntimeState.RUNNING

    def to_json(self) -> dict[str, Any]:
        return {**self.ready, "version": str(self.version), "source": self.source}


@dataclass(frozen=True)
class StartFailed(RuntimeEvent):
    """A staged version failed to start; `fallback` is started next."""

    version: Version
    outcome: ExitOutcome
    fallback: Version
    fallback_source: str
    marked_bad: bool
    damaged: bool  # the version no longer matched its record: blamed on the disk, re-staged later

    @property
    def state(self) -> RuntimeState:
        return RuntimeState.STARTING


@dataclass(frozen=True)
class Crashed(RuntimeEvent):
    version: Version
    source: str
    outcome: ExitOutcome
    restart_in: float | None  # None: not restarting (see the following event)

    @property
    def state(self) -> RuntimeState:
        return RuntimeState.CRASHED


@dataclass(frozen=True)
class Failed(RuntimeEvent):
    message: str
    outcome: ExitOutcome | None = None
    version: Version | None = None

    @property
    def state(self) -> RuntimeState:
        return RuntimeState.FAILED


@dataclass(frozen=True)
class Stopped(RuntimeEvent):
    interrupted_start: bool = False

    @property
    def state(self) -> RuntimeState:
        return RuntimeState.STOPPED


# -- for the window: what went wrong in the user's terms, and what waits ----------------------

class Problem(enum.Enum):
    """What went wrong, as the user sees it; the edges choose the words.

    Decided from error types (`policy.problem_of`), never from message text, so that no
    errno or exception name has to reach the user.
    """

    OFFLINE = "offline"  # this machine has no network at all
    UNREACHABLE = "unreachable"  # the machine is online, the update server does not answer
    BAD_ANSWER = "bad answer"  # the server answered with something unusable
    DOWNLOAD_INTERRUPTED = "download interrupted"
    DOWNLOAD_DAMAGED = "download damaged"  # the bytes changed on the way (proxy, CDN, mirror)
    DISK_FULL = "disk full"
    BUSY = "busy"  # another process is installing an update in this data dir
    NOT_TRUSTED = "not trusted"  # feed signatures or expiry refused: updates paused
    BROKEN_RELEASE = "broken release"  # the release itself is invalid: not tried again
    INCOMPATIBLE = "incompatible"  # the release needs another version of the app
    DATA_DIR = "data dir"  # the data folder cannot be written
    NOT_CONFIGURED = "not configured"
    CANCELLED = "cancelled"
    OTHER = "other"


@dataclass(frozen=True)
class StagedWaiting:
    """A staged update that has not taken effect yet, and since when it waits."""

    version: Version
    since: float  # time.time() when it was staged
# -- the shell itself and the admin policy ---------------------------------------------------

class ShellUpdates(enum.Enum):
    """Whether this shell can update itself."""

    AVAILABLE = "available"  # a per-user install: new shells are staged beside it
    NOT_INSTALLED = "not installed"  # from source or an unpacked archive: nothing to swap
    MANAGED = "managed"  # a system package or the admin policy owns the shell


@dataclass(frozen=True)
class PolicyInfo:
    """The admin policy in force, as the window and `status` show it."""

    in_force: bool
    text: str  # one line: "Managed by policy: ..." (empty when no policy)
    shell_updates: bool
    runtime_updates: bool
    channel: str | None
    runtime_versions: str | None
    shell_versions: str | None
    feed: str | None
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShellInfo:
    """The running shell and its install: what runs, what runs next, what failed."""

    version: str
    updates: ShellUpdates
    reason: str  # why updates are not available (empty when they are)
    install_root: str | None = None
    installed: Version | None = None
    pointer: dict[str, Any] | None = None
    pending: Version | None = None  # staged and pointed at: runs at the next start
    bad: tuple[BadEntry, ...] = ()
    restart_exit_code: int | None = None  # exit with it and the launcher starts `pending`


@dataclass(frozen=True)
class ShellUpdateReport:
    """One check-and-stage of the shell; STAGED means "restart to update"."""

    outcome: UpdateOutcome
    version: Version | None
    updates: ShellUpdates
    reason: str = ""
    needed_by: Version | None = None  # the runtime release that needs this shell
    skipped: tuple[Skip, ...] = ()
    error: DesktopError | None = None
    failure: FailureClass | None = None
    pinned: bool = False
    bytes_downloaded: int = 0
    delta: bool = False
    restart_exit_code: int | None = None


@dataclass(frozen=True)
class AppUpdateReport:
    """An update of the whole app: the runtime (as `update` always did) and the shell."""

    runtime: UpdateReport
    shell: ShellUpdateReport


@dataclass(frozen=True)
class ShellFailure:
    """A shell that failed to start, recorded by the shell that then started healthy instead."""

    version: Version
    reason: str
    marked_bad: bool
    damaged: bool  # its files no longer matched its record: set aside to be staged again, not blamed
    fallback: Version  # the shell that started healthy instead
    fallback_source: str  # "last known-good" or "installed"
