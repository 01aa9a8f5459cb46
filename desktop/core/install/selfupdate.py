"""The shell updating itself: check the feed for shell builds, stage one beside the running shell.

A staged shell takes effect at the next start of the app (the launcher starts the pointer's
shell) or at once on "Restart to update" (the shell exits with RESTART_EXIT_CODE and the
launcher starts the new one). The same stager, records, pointer and bad-list formats serve
shells and runtimes; only the artefact (ShellArtefact) and the store (the install root) differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from packaging.version import Version

from desktop.core import policy
from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig
from desktop.core.errors import DesktopError, StateError
from desktop.core.failures import FailureMemory
from desktop.core.install.artefact import ShellArtefact
from desktop.core.install.root import LAUNCHER_ENV, RESTART_EXIT_CODE, InstallRoot, find_install_root
from desktop.core.launching import staged_versions, trusted_versions
from desktop.core.pointer import read_pointer
from desktop.core.registry import Cancel
from desktop.core.results import (
    BadEntry,
    CheckReport,
    FailureClass,
    PolicyInfo,
    Progress,
    ShellInfo,
    ShellUpdateReport,
    ShellUpdates,
    UpdateOutcome,
)
from desktop.core.state import fsync_dir
from desktop.core.text import one_line
from desktop.core.tree import remove_tree_quietly

if TYPE_CHECKING:
    from desktop.core.download import Fetcher

# The stager and the fetcher (httpx, the archive formats) are imported where they are used:
# `status` reads this module's info() and must stay cheap.

log = logging.getLogger(__name__)


def policy_info(config: AppConfig) -> PolicyInfo:
    admin = config.policy
    return PolicyInfo(
        in_force=admin.in_force, text=admin.describe(), shell_updates=admin.shell_updates,
        runtime_updates=admin.runtime_updates, channel=admin.channel,
        runtime_versions=str(admin.runtime_versions) if admin.runtime_versions else None,
        shell_versions=str(admin.shell_versions) if admin.shell_versions else None,
        feed=admin.feed.url if admin.feed else None, sources=admin.sources, problems=admin.problems)


def availability(config: AppConfig, install: InstallRoot | None) -> tuple[ShellUpdates, str]:
    """Whether this shell may update itself here, and if not, why (one sentence for the window)."""
    if not config.policy.shell_updates:
        return ShellUpdates.MANAGED, (config.policy.message or config.policy.describe()
                                      or "updates of the app are turned off by policy")
    if install is None:
        return ShellUpdates.NOT_INSTALLED, ("this copy of the app is not a per-user install; install it with "
                                            "install.sh to get updates of the app itself")
    if config.registry_kind != "feed" or not config.registry_url:
        return ShellUpdates.NOT_INSTALLED, "updates of the app come from a signed feed, and none is configured"
    return ShellUpdates.AVAILABLE, ""


def _bad_entries(install: InstallRoot) -> tuple[BadEntry, ...]:
    bad = BadVersions(install.bad_file).load()
    return tuple(BadEntry(v, e.reason, e.exit_code, e.stderr_tail, e.time) for v, e in sorted(bad.entries.items()))


def info(config: AppConfig, install: InstallRoot | None = None) -> ShellInfo:
    """The running shell, its install, and what runs at the next start."""
    install = install or find_install_root()
    updates, reason = availability(config, install)
    if install is None:
        return ShellInfo(config.shell_version, updates, reason)
    pointer = read_pointer(install.pointer_file)
    bad = BadVersions(install.bad_file).load()
    running = Version(config.shell_version)
    pending: Version | None = None
    if (pointer is not None and pointer.version > running and not bad.is_bad(pointer.version)
            and install.shell_dir(pointer.version).is_dir()):
        pending = pointer.version
    can_restart = pending is not None and bool(os.environ.get(LAUNCHER_ENV))
    return ShellInfo(config.shell_version, updates, reason, str(install.root), install.installed_version(),
                     pointer.to_json() if pointer else None, pending, _bad_entries(install),
                     RESTART_EXIT_CODE if can_restart else None)


def update(config: AppConfig, fetcher: Fetcher, *, progress: Callable[[Progress], None] | None = None,
           cancel: Cancel | None = None, bypass_rollout: bool = False, runtime_check: CheckReport | None = None,
           install: InstallRoot | None = None, platform: str | None = None) -> ShellUpdateReport:
    """Check the feed for a newer shell (or one a newer runtime needs) and stage it."""
    install = install or find_install_root()
    updates, reason = availability(config, install)
    if updates is not ShellUpdates.AVAILABLE or install is None:
        return ShellUpdateReport(UpdateOutcome.DISABLED, None, updates, reason)
    from desktop.core.registry.feed import FeedRegistry
    from desktop.core.stagelock import Busy
    from desktop.core.stager import stage_artefact
    from desktop.core.updater import install_id

    start = fetcher.bytes_received
    running = Version(config.shell_version)
    artefact = ShellArtefact(install, limits=config.limits, reserve=config.net.min_free_bytes, platform=platform)
    memory = FailureMemory(install.failures_file)

    def failed(exc: DesktopError, version: Version | None, key: str = "") -> ShellUpdateReport:
        kind = policy.classify(exc)
        pinned = False
        if kind is not FailureClass.CANCELLED:
            try:
                pinned = memory.record(version, key, exc)
            except StateError as err:
                log.warning("cannot remember the failure: %s", err)
        outcome = UpdateOutcome.CANCELLED if kind is FailureClass.CANCELLED else UpdateOutcome.FAILED
        log.info("shell update failed: %s", one_line(str(exc)))
        return ShellUpdateReport(outcome, version, updates, error=exc, failure=kind, pinned=pinned,
                                 bytes_downloaded=fetcher.bytes_received - start)

    try:
        registry = FeedRegistry(config, fetcher)
        listing = registry.list_shell_releases(artefact.platform)
        pointer = read_pointer(install.pointer_file)
        bad = BadVersions(install.bad_file).load()
        trusted = trusted_versions(pointer)
        needed = (policy.runtimes_needing_shell(runtime_check.skipped, runtime_check.offered)
                  if runtime_check is not None else ())
        installed = install.installed_version()
        choice = policy.choose_shell(listing.releases, current=running, channel=config.channel,
                                     is_bad=lambda v: v != installed and bad.is_bad(v, trusted=trusted),
                                     pinned=lambda r: memory.pinned_reason(r.version, r.artefact_key),
                                     install_id=install_id(config), bypass_rollout=bypass_rollout,
                                     allowed=config.policy.shell_versions, needed_for=needed)
    except DesktopError as exc:
        return failed(exc, None)
    release = choice.release
    if release is None:
        return ShellUpdateReport(UpdateOutcome.UP_TO_DATE, running, updates, skipped=choice.skipped,
                                 bytes_downloaded=fetcher.bytes_received - start)
    try:
        staged = stage_artefact(artefact, registry, release, progress=progress, cancel=cancel)
    except DesktopError as exc:
        return failed(exc, release.version, release.artefact_key)
    if staged.outcome in (UpdateOutcome.STAGED, UpdateOutcome.ALREADY_STAGED):
        with contextlib.suppress(StateError):
            memory.record_success()
    if staged.outcome is UpdateOutcome.STAGED:
        try:
            collect_garbage(install, running)
        except (Busy, DesktopError, OSError) as exc:
            log.info("shell garbage collection skipped: %s", exc)
    can_restart = bool(os.environ.get(LAUNCHER_ENV)) and staged.outcome in (UpdateOutcome.STAGED,
                                                                           UpdateOutcome.ALREADY_STAGED)
    return ShellUpdateReport(staged.outcome, staged.version, updates, needed_by=choice.needed_by,
                             skipped=choice.skipped, bytes_downloaded=fetcher.bytes_received - start,
                             delta=staged.delta, restart_exit_code=RESTART_EXIT_CODE if can_restart else None)


def running_shells(install: InstallRoot) -> set[Version]:
    """Shell versions some process runs now (Linux: every /proc/<pid>/exe inside shells/)."""
    found: set[Version] = set()
    shells = os.path.realpath(install.shells_dir) + os.sep
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.startswith(shells):
            name = exe[len(shells):].split(os.sep, 1)[0]
            with contextlib.suppress(ValueError):
                found.add(Version(name))
    return found


def collect_garbage(install: InstallRoot, running: Version | None = None, keep_extra: int = 1) -> list[str]:
    """Remove old shells nobody needs: never the installed one, the pointer's, its last known-good or
    one a process runs; bad ones first; `keep_extra` other good ones stay. Raises Busy while staging."""
    from desktop.core.stagelock import stage_lock
    from desktop.core.stager import clean_partials

    removed: list[str] = []
    store = install.store
    with stage_lock(store):
        gone, _stuck = clean_partials(store)
        removed += gone
        pointer = read_pointer(install.pointer_file)
        installed = install.installed_version()
        protected = running_shells(install) | {v for v in (installed, running) if v is not None}
        if pointer is not None:
            protected |= {v for v in (pointer.version, pointer.last_known_good) if v is not None}
        bad = BadVersions(install.bad_file).load()
        trusted = trusted_versions(pointer)
        plan = policy.plan_gc(staged_versions(install.shells_dir), protected=protected,
                              is_bad=lambda v: bad.is_bad(v, trusted=trusted), keep_extra=keep_extra)
        for version in plan.remove:
            directory = install.shell_dir(version)
            aside = directory.with_name(f".{directory.name}.gc-{secrets.token_hex(4)}")
            try:
                os.rename(directory, aside)
            except OSError as exc:
                log.warning("cannot remove shell %s: %s", version, exc.strerror or exc)
                continue
            remove_tree_quietly(aside)
            with contextlib.suppress(OSError):
                store.record_file(version).unlink()
            removed.append(str(version))
        if plan.remove:
            fsync_dir(install.shells_dir)
    return removed


def clear_bad(install: InstallRoot, version: Version | None) -> list[Version]:
    """Forget that shell `version` (or every shell) failed, so it may be staged and started again."""
    cleared = BadVersions(install.bad_file).clear(version)
    FailureMemory(install.failures_file).clear(version)
    return cleared

