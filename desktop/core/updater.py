"""Check and update: ask the registry, choose a release, stage it, remember what failed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.download import Cancel, Fetcher
from desktop.core.errors import CancelledError, DesktopError, NetworkError, TransientError, TrustError, UsageError
from desktop.core.failures import FailureMemory
from desktop.core.registry import Registry, Release
from desktop.core.selection import resolve_target
from desktop.core.stager import StageOutcome, StageProgress, StageResult, stage
from desktop.core.state import BadVersions, atomic_write_json, read_json_object
from desktop.core.versions import admits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    version: Version
    reason: str


@dataclass(frozen=True)
class CheckResult:
    """The outcome of asking the registry."""

    current: Version
    available: Release | None
    offered: tuple[Release, ...]
    skipped: tuple[Skipped, ...]
    not_modified: bool = False
    bytes_received: int = 0


@dataclass(frozen=True)
class UpdateResult:
    outcome: StageOutcome
    version: Version | None
    check: CheckResult | None = None
    error: DesktopError | None = None
    downloaded: bool = False


def choose_update(
    releases: Iterable[Release],
    current: Version,
    *,
    bad: Iterable[Version],
    is_pinned: Callable[[Release], bool],
    shell_version: str,
) -> tuple[Release | None, list[Skipped]]:
    """The newest release worth staging, and why each newer one was passed over (pure)."""
    bad_set = set(bad)
    skipped: list[Skipped] = []
    for release in sorted(releases, key=lambda r: r.version, reverse=True):
        if release.version <= current:
            break
        if release.version in bad_set:
            skipped.append(Skipped(release.version, "marked bad"))
        elif is_pinned(release):
            skipped.append(Skipped(release.version, "failed validation before"))
        elif not admits(release.requires_shell, shell_version):
            skipped.append(Skipped(release.version, f"requires shell {release.requires_shell}"))
        else:
            return release, skipped
    return None, skipped


def open_registry(config: AppConfig, fetcher: Fetcher | None = None) -> Registry:
    """The registry client the configuration names."""
    if not config.registry_url:
        raise UsageError("no registry configured (pass --registry URL)")
    fetcher = fetcher or Fetcher(config.net)
    config.data.ensure()
    if config.registry_kind == "npm":
        from desktop.core.registry.npm import NpmRegistry

        return NpmRegistry(config.registry_url, fetcher, config.data.cache_dir)
    from desktop.core.registry.feed import FeedRegistry

    return FeedRegistry(config, fetcher)


def check(config: AppConfig, registry: Registry | None = None) -> CheckResult:
    """Ask the registry for the newest usable release; records the result in last-check.json."""
    own = registry is None
    reg = registry or open_registry(config)
    try:
        current = resolve_target(config, repair=False).version
        listing = reg.list_releases(config.channel)
        memory = FailureMemory(config.data.failures_file)
        bad = BadVersions(config.data.bad_file).load()
        available, skipped = choose_update(
            listing.releases, current, bad=bad,
            is_pinned=lambda r: memory.is_pinned(r.version, r.artefact_key),
            shell_version=config.shell_version)
    except DesktopError as exc:
        record_check(config, "offline" if isinstance(exc, NetworkError) else "failed", error=str(exc))
        if isinstance(exc, TransientError | TrustError):
            # Retried with backoff; an expired or replayed feed must never brick or loop.
            FailureMemory(config.data.failures_file).record(None, "", exc)
        raise
    finally:
        if own:
            reg.close()
    result = CheckResult(current, available, listing.releases, tuple(skipped),
                         listing.not_modified, listing.bytes_received)
    record_check(config, "available" if available else "up-to-date",
                 available=str(available.version) if available else None)
    return result


def update(config: AppConfig, *, progress: StageProgress | None = None, cancel: Cancel | None = None,
           registry: Registry | None = None) -> UpdateResult:
    """Check, then stage the chosen release. Expected failures come back as outcome FAILED."""
    own = registry is None
    reg = registry or open_registry(config)
    memory = FailureMemory(config.data.failures_file)
    try:
        try:
            result = check(config, reg)
        except DesktopError as exc:
            return UpdateResult(StageOutcome.FAILED, None, error=exc)
        release = result.available
        if release is None:
            bad_skip = next((s for s in result.skipped if s.reason == "marked bad"), None)
            if bad_skip is not None and not any(r.version > bad_skip.version for r in result.offered):
                return UpdateResult(StageOutcome.BAD_VERSION, bad_skip.version, result)
            return UpdateResult(StageOutcome.UP_TO_DATE, result.current, result)
        try:
            staged: StageResult = stage(config, reg, release, progress=progress, cancel=cancel)
        except CancelledError as exc:
            # Quitting mid-download is nobody's failure: nothing is pinned or counted.
            return UpdateResult(StageOutcome.FAILED, release.version, result, exc)
        except DesktopError as exc:
            pinned = memory.record(release.version, release.artefact_key, exc)
            log.warning("staging %s failed%s: %s", release.version, " (pinned)" if pinned else "", exc)
            record_check(config, "failed", available=str(release.version), error=str(exc))
            return UpdateResult(StageOutcome.FAILED, release.version, result, exc)
        if staged.outcome in (StageOutcome.STAGED, StageOutcome.ALREADY_STAGED):
            memory.record_success()
            record_check(config, "staged", available=str(release.version))
            _collect_garbage(config)
        return UpdateResult(staged.outcome, staged.version, result, downloaded=staged.downloaded)
    finally:
        if own:
            reg.close()


def _collect_garbage(config: AppConfig) -> None:
    """Old versions go once a new one is staged (never the running, pointer or known-good one)."""
    from desktop.core.gc import collect
    from desktop.core.stager import Busy

    try:
        collect(config)
    except (Busy, DesktopError, OSError) as exc:
        log.info("garbage collection skipped: %s", exc or "busy")


def record_check(config: AppConfig, result: str, *, available: str | None = None,
                 error: str | None = None) -> None:
    try:
        atomic_write_json(config.data.check_file, {
            "time": time.time(), "result": result, "available": available, "error": error,
            "registry": config.registry_url, "channel": config.channel})
    except DesktopError as exc:
        log.warning("cannot record the check: %s", exc)


def last_check(config: AppConfig) -> dict[str, Any] | None:
    return read_json_object(config.data.check_file)
