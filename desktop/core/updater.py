"""Check and update: ask the registry, let policy choose, stage, remember what failed."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from packaging.version import Version

from desktop.core import policy
from desktop.core.checkrecord import record_check
from desktop.core.config import AppConfig
from desktop.core.download import Cancel, Fetcher
from desktop.core.errors import DesktopError, ManifestError, StateError, UsageError
from desktop.core.failures import FailureMemory, SkippedVersions
from desktop.core.launching import load_bad, resolve, staged_problem, trusted_versions
from desktop.core.leases import Leases
from desktop.core.pointer import read_pointer
from desktop.core.registry import Registry, Release
from desktop.core.results import (
    CheckReport,
    FailureClass,
    ReleaseInfo,
    SkipReason,
    UpdateOutcome,
    UpdateReport,
)
from desktop.core.stager import StageProgress, stage
from desktop.core.state import atomic_write_bytes
from desktop.core.text import one_line

log = logging.getLogger(__name__)


def open_registry(config: AppConfig, fetcher: Fetcher) -> Registry:
    """The registry client the configuration names."""
    if not config.registry_url:
        raise UsageError("no registry configured (pass --registry URL)")
    config.data.ensure()
    if config.registry_kind == "npm":
        from desktop.core.registry.npm import NpmRegistry

        return NpmRegistry(config.registry_url, fetcher, config.data.cache_dir, config.data.integrity_file)
    from desktop.core.registry.feed import FeedRegistry

    return FeedRegistry(config, fetcher)


def install_id(config: AppConfig) -> str:
    """A random id created once per data dir, used only for rollout buckets."""
    path = config.data.install_id_file
    try:
        value = path.read_text().strip()
        if len(value) == 32 and all(c in "0123456789abcdef" for c in value):
            return value
    except OSError:
        pass
    value = secrets.token_hex(16)
    try:
        atomic_write_bytes(path, value.encode())
    except StateError as exc:
        log.warning("cannot save the install id: %s", exc)
    return value


def info(release: Release) -> ReleaseInfo:
    return ReleaseInfo(release.version, release.channel, release.notes, release.size, release.published,
                       release.requires_shell)


@dataclass(frozen=True)
class Checked:
    report: CheckReport
    release: Release | None


def check(config: AppConfig, registry: Registry, *, bypass_rollout: bool = False) -> Checked:
    """Ask the registry for the newest usable release; records the result in last-check.json."""
    try:
        current = resolve(config, repair=False).version
        listing = registry.list_releases(config.channel)
        memory = FailureMemory(config.data.failures_file)
        pointer = read_pointer(config.data.pointer_file)
        bad = load_bad(config, pointer)
        trusted = trusted_versions(pointer)
        selection = policy.choose_release(
            listing.releases, current=current, channel=config.channel,
            is_bad=lambda v: bad.is_bad(v, trusted=trusted),
            pinned=lambda r: memory.pinned_reason(r.version, r.artefact_key),
            skipped_by_user=SkippedVersions(config.data.skipped_file).load(),
            shell_version=config.shell_version, install_id=install_id(config),
            bypass_rollout=bypass_rollout, allowed=config.policy.runtime_versions)
    except DesktopError as exc:
        kind = policy.classify(exc)
        record_check(config, "offline" if kind is FailureClass.TRANSIENT else "failed", error=str(exc))
        if kind in (FailureClass.TRANSIENT, FailureClass.TRUST):
            # Retried with backoff; an expired or replayed feed must never brick or loop.
            _remember(config, None, "", exc)
        raise
    chosen = selection.release
    wanted = policy.channels_for(config.channel)
    offered = tuple(info(r) for r in listing.releases if r.channel in wanted)
    report = CheckReport(current, info(chosen) if chosen else None, offered, selection.skipped,
                         listing.not_modified, listing.bytes_received,
                         tuple(info(r) for r in selection.between))
    record_check(config, "available" if chosen else "up-to-date",
                 available=str(chosen.version) if chosen else None)
    return Checked(report, chosen)


def update(config: AppConfig, registry: Registry, *, progress: StageProgress | None = None,
           cancel: Cancel | None = None, bypass_rollout: bool = False,
           received: Callable[[], int] = lambda: 0) -> UpdateReport:
    """Check, then stage the chosen release. Expected failures come back as outcome FAILED."""
    start = received()
    try:
        checked = check(config, registry, bypass_rollout=bypass_rollout)
    except DesktopError as exc:
        return UpdateReport(UpdateOutcome.FAILED, None, error=exc, failure=policy.classify(exc),
                            bytes_downloaded=received() - start)
    report, release = checked.report, checked.release
    if release is None:
        bad_skip = next((s for s in report.skipped if s.reason is SkipReason.BAD), None)
        if bad_skip is not None and not any(r.version > bad_skip.version for r in report.offered):
            return UpdateReport(UpdateOutcome.BAD_VERSION, bad_skip.version, report,
                                bytes_downloaded=received() - start)
        return UpdateReport(UpdateOutcome.UP_TO_DATE, report.current, report, bytes_downloaded=received() - start)
    try:
        _check_heals(config, release)
        staged = stage(config, registry, release, progress=progress, cancel=cancel)
    except DesktopError as exc:
        kind = policy.classify(exc)
        if kind is FailureClass.CANCELLED:
            # Quitting mid-download is nobody's failure: nothing is pinned or counted.
            return UpdateReport(UpdateOutcome.CANCELLED, release.version, report, exc, kind,
                                bytes_downloaded=received() - start)
        pinned = _remember(config, release.version, release.artefact_key, exc)
        log.info("staging %s failed%s: %s", release.version, " (pinned)" if pinned else "", one_line(str(exc)))
        record_check(config, "failed", available=str(release.version), error=str(exc))
        return UpdateReport(UpdateOutcome.FAILED, release.version, report, exc, kind, pinned,
                            bytes_downloaded=received() - start, retry_at=_retry_at(config))
    if staged.outcome in (UpdateOutcome.STAGED, UpdateOutcome.ALREADY_STAGED):
        try:
            FailureMemory(config.data.failures_file).record_success()
        except StateError as exc:
            log.warning("cannot record the success: %s", exc)
        record_check(config, "staged", available=str(release.version))
    return UpdateReport(staged.outcome, staged.version, report, bytes_downloaded=received() - start,
                        delta=staged.delta)


MAX_HEALS = 2


def _check_heals(config: AppConfig, release: Release) -> None:
    """A staged version that stops matching its record is staged again (healed); one that keeps
    doing so changes its own files when it runs, and cannot be verified: it is refused."""
    if not config.data.version_dir(release.version).exists():
        return
    problem = staged_problem(config, release.version)
    if problem is None or any(lease.version == release.version for lease in Leases(config.data.leases_dir).live()):
        return  # fine, or running: the stager leaves a running version alone
    try:
        heals = FailureMemory(config.data.failures_file).record_heal(release.version, release.artefact_key)
    except StateError:
        return
    if heals > MAX_HEALS:
        raise ManifestError(f"version {release.version} keeps changing its own files after it is staged "
                            f"({problem}), so it cannot be verified")


def _remember(config: AppConfig, version: Version | None, artefact: str, error: DesktopError) -> bool:
    try:
        return FailureMemory(config.data.failures_file).record(version, artefact, error)
    except StateError as exc:
        log.warning("cannot remember the failure: %s", exc)
        return False


def _retry_at(config: AppConfig) -> float | None:
    state = FailureMemory(config.data.failures_file).transient()
    return state.next_retry if state else None
