"""Pure decisions: which release, which fallback, what a crash means, when to check, what failed.

No I/O here: the clock and randomness are arguments, and anything that must look at the
disk comes in as a predicate. Every rule is unit- and property-tested
(tests/unit/core/test_policy.py).
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from desktop.core import errors
from desktop.core.errors import (
    CancelledError,
    DataDirError,
    InvalidReleaseError,
    StateError,
    TransientError,
    TrustError,
    UsageError,
)
from desktop.core.pointer import Pointer
from desktop.core.registry import Release
from desktop.core.results import FailureClass, Problem, ReleaseInfo, Skip, SkipReason
from desktop.core.versions import admits

CHANNEL_INCLUDES = {"stable": ("stable",), "beta": ("beta", "stable"), "alpha": ("alpha", "beta", "stable")}


# -- releases --------------------------------------------------------------------------------

def channels_for(channel: str) -> tuple[str, ...]:
    """A user on a channel also gets the releases of the more stable channels."""
    return CHANNEL_INCLUDES.get(channel, (channel, "stable"))


def rollout_bucket(install_id: str, version: Version | str) -> float:
    """This install's position in [0, 100) for a version's phased rollout (stable across runs)."""
    digest = hashlib.sha256(f"{install_id}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


@dataclass(frozen=True)
class Selection:
    release: Release | None
    skipped: tuple[Skip, ...]
    between: tuple[Release, ...] = ()  # releases newer than current up to the chosen one, newest first


def choose_release(
    releases: Iterable[Release],
    *,
    current: Version,
    channel: str,
    is_bad: Callable[[Version], bool],
    pinned: Callable[[Release], str | None],
    skipped_by_user: Collection[Version] = (),
    shell_version: str,
    install_id: str,
    bypass_rollout: bool = False,
    allowed: SpecifierSet | None = None,
) -> Selection:
    """The newest release worth staging, and why each newer one was passed over.

    Releases on channels the user does not follow are ignored silently; everything else newer
    than `current` that is not taken gets a `Skip` with its reason. A release outside this
    install's rollout is skipped unless `bypass_rollout` (a manual check); older releases that
    are inside it are still offered.
    """
    wanted = channels_for(channel)
    skipped: list[Skip] = []
    newer = sorted((r for r in releases if r.version > current and r.channel in wanted),
                   key=lambda r: r.version, reverse=True)
    seen: set[Version] = set()
    for index, release in enumerate(newer):
        version = release.version
        if version in seen:
            continue
        seen.add(version)
        reason: SkipReason | None = None
        detail = ""
        why_pinned = None
        if is_bad(version):
            reason = SkipReason.BAD
        elif version in skipped_by_user:
            reason = SkipReason.SKIPPED
        elif allowed is not None and not allowed.contains(version, prereleases=True):
            reason, detail = SkipReason.POLICY, str(allowed)
        elif (why_pinned := pinned(release)) is not None:
            reason, detail = SkipReason.PINNED, why_pinned
        elif not admits(release.requires_shell, shell_version):
            reason, detail = SkipReason.HOST_GATE, f"requires shell {release.requires_shell}"
        elif not bypass_rollout and release.rollout < 100 \
                and rollout_bucket(install_id, version) >= release.rollout:
            reason, detail = SkipReason.ROLLOUT, f"{release.rollout:g}% rollout"
        if reason is None:
            return Selection(release, tuple(skipped), tuple(newer[: index + 1]))
        skipped.append(Skip(version, reason, detail))
    return Selection(None, tuple(skipped))


# -- shells ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShellChoice:
    """The shell release to stage, and the runtime release that needs it (None: just newer)."""

    release: Release | None
    skipped: tuple[Skip, ...]
    needed_by: Version | None = None


def runtimes_needing_shell(skipped: Iterable[Skip], offered: Iterable[ReleaseInfo]) -> tuple[tuple[Version, str], ...]:
    """(runtime version, its requires_shell) of each newer runtime passed over for the host gate."""
    gates = {r.version: r.requires_shell for r in offered if r.requires_shell}
    return tuple(sorted(((s.version, gates[s.version]) for s in skipped
                         if s.reason is SkipReason.HOST_GATE and s.version in gates), reverse=True))


def choose_shell(shells: Iterable[Release], *, current: Version, channel: str, is_bad: Callable[[Version], bool],
                 pinned: Callable[[Release], str | None], install_id: str, bypass_rollout: bool = False,
                 allowed: SpecifierSet | None = None,
                 needed_for: Iterable[tuple[Version, str]] = ()) -> ShellChoice:
    """The shell to stage: the newest usable shell release (choose_release's rules), unless a newer
    runtime needs a newer shell than runs now (`needed_for`: runtime version and requires_shell,
    from runtimes_needing_shell). Then the newest shell that admits the newest such runtime is
    chosen even outside the shell's rollout, so that runtime is offered once that shell runs:
    the install is already inside the runtime's rollout, and the runtime cannot run without it."""
    candidates = list(shells)
    normal = choose_release(candidates, current=current, channel=channel, is_bad=is_bad, pinned=pinned,
                            shell_version=str(current), install_id=install_id, bypass_rollout=bypass_rollout,
                            allowed=allowed)
    for runtime, requires in sorted(needed_for, reverse=True):
        if normal.release is not None and admits(requires, str(normal.release.version)):
            return ShellChoice(normal.release, normal.skipped, runtime)
        fitting = [s for s in candidates if admits(requires, str(s.version))]
        forced = choose_release(fitting, current=current, channel=channel, is_bad=is_bad, pinned=pinned,
                                shell_version=str(current), install_id=install_id, bypass_rollout=True,
                                allowed=allowed)
        if forced.release is not None:
            return ShellChoice(forced.release, normal.skipped, runtime)
    return ShellChoice(normal.release, normal.skipped)


# -- launching -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchChoice:
    """What to launch: a staged version, or None for the bundled runtime, and the pointer repair."""

    version: Version | None
    role: str  # "pointer", "last known-good" or "bundled"
    reason: str
    repair: bool = False  # replace the pointer with `repaired`
    repaired: Pointer | None = None


def choose_launch(pointer: Pointer | None, *, bundled: Version, is_bad: Callable[[Version], bool],
                  problem: Callable[[Version], str | None]) -> LaunchChoice:
    """The launch rules: the pointer's version if it is newer than the bundled runtime, not bad and
    intact; else its last known-good; else the bundled runtime. `problem(v)` says why a staged
    version cannot be launched (None when it verifies)."""
    if pointer is None:
        return LaunchChoice(None, "bundled", "bundled runtime")

    def judge(version: Version | None, role: str) -> str | None:
        if version is None:
            return f"no {role}"
        if version <= bundled:
            return f"{role} {version} is not newer than the bundled runtime {bundled}"
        if is_bad(version):
            return f"{role} {version} is marked bad"
        trouble = problem(version)
        return f"{role} {version} does not verify: {trouble}" if trouble else None

    first = judge(pointer.version, "pointer")
    if first is None:
        return LaunchChoice(pointer.version, "pointer", f"pointer {pointer.version}")
    second = judge(pointer.last_known_good, "last known-good")
    if second is None and pointer.last_known_good is not None:
        lkg = pointer.last_known_good
        return LaunchChoice(lkg, "last known-good", f"{first}; last known-good {lkg}", True,
                            Pointer(lkg, known_good=True))
    return LaunchChoice(None, "bundled", f"{first}; bundled runtime", True, None)


def choose_fallback(failed: Version, pointer: Pointer | None, *, bundled: Version,
                    is_bad: Callable[[Version], bool], usable: Callable[[Version], bool]) -> Version | None:
    """After `failed` (the version that actually ran) failed to start: the last known-good if it is
    usable, else None for the bundled runtime. Chosen explicitly, never by re-reading the pointer
    for the version to launch, which a concurrent stage may have moved."""
    candidates: list[Version] = []
    if pointer is not None:
        if pointer.version != failed and pointer.known_good:
            candidates.append(pointer.version)
        if pointer.last_known_good is not None:
            candidates.append(pointer.last_known_good)
    for version in candidates:
        if version != failed and version > bundled and not is_bad(version) and usable(version):
            return version
    return None


# -- crashes ---------------------------------------------------------------------------------

class CrashAction(enum.Enum):
    RESTART = "restart"
    MARK_BAD = "mark bad"  # a staged version: mark it bad and start the fallback
    GIVE_UP = "give up"  # stop restarting, show the error


@dataclass(frozen=True)
class CrashRules:
    early_s: float = 10.0  # a crash this soon after start is "early"
    early_to_bad: int = 3  # early crashes that make a staged version bad
    stable_s: float = 600.0  # a run this long resets the crash count
    max_short_runs: int = 5  # consecutive runs shorter than stable_s before giving up
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_interrupted_starts: int = 2  # starts that took the shell down before the version is bad


@dataclass(frozen=True)
class CrashHistory:
    short_runs: int = 0
    early: int = 0


@dataclass(frozen=True)
class CrashVerdict:
    action: CrashAction
    delay: float
    history: CrashHistory
    reason: str = ""


def crash_verdict(history: CrashHistory, *, uptime: float, bundled: bool,
                  rules: CrashRules = CrashRules()) -> CrashVerdict:
    """What a crash after ready means. Runs shorter than `stable_s` accumulate, so a runtime that
    crashes every 13 s is not restarted for ever; a long healthy run starts the count afresh."""
    if uptime >= rules.stable_s:
        history = CrashHistory()
    runs = history.short_runs + 1
    early = history.early + (1 if uptime < rules.early_s else 0)
    new = CrashHistory(runs, early)
    if not bundled and early >= rules.early_to_bad:
        return CrashVerdict(CrashAction.MARK_BAD, 0.0, new,
                            f"crash loop: crashed {early} times within {rules.early_s:g} s of starting")
    if runs >= rules.max_short_runs:
        reason = (f"crash loop: crashed {runs} times in a row, each within "
                  f"{rules.stable_s / 60:g} min of starting")
        return CrashVerdict(CrashAction.GIVE_UP if bundled else CrashAction.MARK_BAD, 0.0, new, reason)
    return CrashVerdict(CrashAction.RESTART, backoff(runs, base=rules.backoff_base_s, cap=rules.backoff_cap_s), new)


def interrupted_start_is_crash(deaths: int, rules: CrashRules = CrashRules()) -> bool:
    """Starts during which the shell itself died unexplained count only once they repeat."""
    return deaths >= rules.max_interrupted_starts


# -- checking --------------------------------------------------------------------------------

BACKOFF_BASE_S = 60.0
BACKOFF_MAX_S = 6 * 3600.0
MIN_RETRY_S = 30.0


def backoff(failures: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_MAX_S) -> float:
    """Seconds to wait after `failures` consecutive failures (exponential, capped)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2.0 ** min(failures - 1, 60)))


def next_check_delay(*, interval: float, failures: int, rand: float, retry_at: float | None = None,
                     now: float = 0.0) -> float:
    """Seconds until the next automatic check: the interval with +-10 % jitter (installs do not check
    in lockstep), or after failures an exponential backoff, never sooner than 30 s nor later
    than the interval. `rand` is in [0, 1)."""
    interval = interval if math.isfinite(interval) and interval > 0 else 6 * 3600.0
    if failures > 0:
        delay = backoff(failures) * (1.0 + 0.1 * rand)
        if retry_at is not None and math.isfinite(retry_at):
            delay = max(delay, retry_at - now)
        return min(max(delay, MIN_RETRY_S), interval)
    return interval * (0.9 + 0.2 * rand)


# -- failures --------------------------------------------------------------------------------

def classify(error: BaseException) -> FailureClass:
    """Transient failures are retried; only a content failure of verified bytes is pinned."""
    if isinstance(error, CancelledError):
        return FailureClass.CANCELLED
    if isinstance(error, InvalidReleaseError):
        return FailureClass.DETERMINISTIC
    if isinstance(error, TrustError):
        return FailureClass.TRUST
    if isinstance(error, TransientError):
        return FailureClass.TRANSIENT
    if isinstance(error, StateError | DataDirError | UsageError | OSError):
        return FailureClass.LOCAL
    return FailureClass.TRANSIENT


# -- garbage collection ----------------------------------------------------------------------

@dataclass(frozen=True)
class GcPlan:
    keep: frozenset[Version]
    remove: tuple[Version, ...]  # bad ones first


def plan_gc(staged: Iterable[Version], *, protected: Collection[Version], is_bad: Callable[[Version], bool],
            keep_extra: int = 1) -> GcPlan:
    """Keep the protected versions (running, pointer, last known-good) and the newest `keep_extra`
    other versions that are not bad; remove the rest, bad ones first."""
    versions = sorted(set(staged), reverse=True)
    keep = {v for v in versions if v in protected}
    others = [v for v in versions if v not in keep and not is_bad(v)]
    keep.update(others[: max(keep_extra, 0)])
    doomed = [v for v in versions if v not in keep]
    doomed.sort(key=lambda v: (not is_bad(v), v))
    return GcPlan(frozenset(keep), tuple(doomed))


# -- what the window says --------------------------------------------------------------------

STAGED_REMINDER_AFTER_S = 3 * 86400.0
STAGED_REMINDER_EVERY_S = 86400.0


def problem_of(error: BaseException, *, online: bool) -> Problem:
    """The user's view of a failure. "Offline" only when the machine itself has no network;
    an unreachable server on a connected machine is the server's problem, not the user's."""
    if isinstance(error, errors.CancelledError):
        return Problem.CANCELLED
    if isinstance(error, errors.NetworkError | errors.DownloadError) and not online:
        return Problem.OFFLINE
    table: tuple[tuple[type[BaseException], Problem], ...] = (
        (errors.NetworkError, Problem.UNREACHABLE),
        (errors.BusyError, Problem.BUSY),
        (errors.DiskSpaceError, Problem.DISK_FULL),
        (errors.DigestMismatchError, Problem.DOWNLOAD_DAMAGED),
        (errors.DownloadError, Problem.DOWNLOAD_INTERRUPTED),
        (errors.RegistryError, Problem.BAD_ANSWER),
        (errors.HostGateError, Problem.INCOMPATIBLE),
        (errors.InvalidReleaseError, Problem.BROKEN_RELEASE),
        (errors.TrustError, Problem.NOT_TRUSTED),
        (errors.DataDirError, Problem.DATA_DIR),
        (errors.StateError, Problem.DATA_DIR),
        (errors.UsageError, Problem.NOT_CONFIGURED),
        (OSError, Problem.DATA_DIR),
    )
    for kind, problem in table:
        if isinstance(error, kind):
            return problem
    return Problem.OTHER


def notes_for(offered: Iterable[ReleaseInfo], *, current: Version, target: Version) -> tuple[ReleaseInfo, ...]:
    """What's new going from `current` to `target`: every offered release in (current, target],
    newest first, one per version (the ones passed over included: their changes come along)."""
    chosen: dict[Version, ReleaseInfo] = {}
    for release in offered:
        if current < release.version <= target:
            chosen.setdefault(release.version, release)
    return tuple(sorted(chosen.values(), key=lambda r: r.version, reverse=True))


def staged_reminder_due(waiting_since: float, *, now: float, last_reminded: float | None,
                        after_s: float = STAGED_REMINDER_AFTER_S, every_s: float = STAGED_REMINDER_EVERY_S) -> bool:
    """Whether to remind the user, gently, of a staged update that has waited for days: not before
    `after_s`, then at most once per `every_s`; never a forced restart."""
    if not (math.isfinite(waiting_since) and waiting_since > 0) or now - waiting_since < after_s:
        return False
    return last_reminded is None or now - last_reminded >= every_s
