"""Shell builds and the install root: verification, the choice of shell, health marks, failure records."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from desktop import buildinfo
from desktop.core import policy
from desktop.core.badlist import BadVersions
from desktop.core.digests import Integrity
from desktop.core.errors import ManifestError
from desktop.core.install import health
from desktop.core.install.artefact import ShellArtefact, verify_build
from desktop.core.install.failure import describe_exit, read_tail, record_failure, record_launch_failures
from desktop.core.install.root import (
    HEALTH_MARK_ENV,
    INSTALL_ROOT_ENV,
    LAUNCHER_ENV,
    InstallRoot,
    find_install_root,
    running_from,
)
from desktop.core.pointer import Pointer, read_pointer, write_pointer
from desktop.core.records import build_record, write_record
from desktop.core.registry import Release
from desktop.core.results import ReleaseInfo, Skip, SkipReason
from tests.support.installs import fake_build, make_root

V = Version
PLATFORM = buildinfo.platform_tag()


# -- build info and verification --------------------------------------------------------------

def test_a_good_build_verifies(tmp_path: Path) -> None:
    info = verify_build(fake_build(tmp_path / "b", "1.1.0"), expected=V("1.1.0"), platform=PLATFORM)
    assert (info.version, info.platform, info.executable) == ("1.1.0", PLATFORM, "desktop")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "_internal" / "build-info.json").unlink(), "no _internal/build-info.json"),
    (lambda d: (d / "_internal" / "build-info.json").write_text("{"), "is not valid JSON"),
    (lambda d: (d / "_internal" / "build-info.json").write_text('{"version": "../x", "platform": "linux-x86_64"}'),
     "is not a version"),
    (lambda d: (d / "_internal" / "build-info.json").write_text(
        json.dumps({"version": "1.1.0", "platform": "linux-x86_64", "executable": "../../bin/sh"})),
     "is not a plain file name"),
    (lambda d: (d / "desktop").unlink(), "has no executable 'desktop'"),
    (lambda d: (d / "desktop").chmod(0o644), "is not an executable file"),
    (lambda d: ((d / "desktop").unlink(), (d / "desktop").symlink_to("/bin/sh")), "is not an executable file"),
    (lambda d: ((d / "_internal" / "build-info.json").rename(d / "real.json"),
                (d / "_internal" / "build-info.json").symlink_to(d / "real.json")), "cannot read"),
])
def test_a_build_that_cannot_run_is_an_invalid_release(tmp_path: Path, damage: object, message: str) -> None:
    build = fake_build(tmp_path / "b", "1.1.0")
    damage(build)  # type: ignore[operator]
    with pytest.raises(ManifestError, match=message):
        verify_build(build, expected=V("1.1.0"), platform=PLATFORM)


def test_a_build_for_another_version_or_platform_is_refused(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "b", "1.3.0")
    with pytest.raises(ManifestError, match="says version 1.3.0, expected 1.1.0"):
        verify_build(build, expected=V("1.1.0"), platform=PLATFORM)
    with pytest.raises(ManifestError, match="is for .*, this machine is windows-x86_64"):
        verify_build(build, expected=None, platform="windows-x86_64")


def test_the_frozen_version_comes_from_the_build_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "build-info.json").write_bytes(buildinfo.BuildInfo("1.2.0", PLATFORM).dumps())
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert buildinfo.frozen_version("1.0.0") == "1.2.0"
    (tmp_path / "build-info.json").write_text("garbage")
    assert buildinfo.frozen_version("1.0.0") == "1.0.0"
    monkeypatch.setattr(sys, "frozen", False)
    assert buildinfo.frozen_version("1.0.0") == "1.0.0"


def test_an_install_build_without_a_record_gets_one_and_damage_is_found_after(tmp_path: Path) -> None:
    install = InstallRoot(make_root(tmp_path / "app"))
    artefact = ShellArtefact(install)
    assert artefact.problem(V("1.0.0")) is None
    assert install.store.record_file(V("1.0.0")).is_file()
    (install.shell_dir(V("1.0.0")) / "desktop").write_text("#!/bin/sh\nexit 1\n")
    assert artefact.problem(V("1.0.0")) is not None
    assert artefact.problem(V("7.0.0")) == f"{install.shell_dir(V('7.0.0'))} is not a directory"


# -- the install root ---------------------------------------------------------------------------

def test_the_install_root_is_found_from_the_launchers_environment_only_when_it_is_safe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path / "app")
    monkeypatch.setenv(INSTALL_ROOT_ENV, str(root))
    found = find_install_root()
    assert found is not None and found.root == root and found.installed_version() == V("1.0.0")
    root.chmod(0o770)
    assert find_install_root() is None
    root.chmod(0o700)
    (root / "installed").unlink()
    assert find_install_root() is None
    monkeypatch.delenv(INSTALL_ROOT_ENV)
    assert find_install_root() is None  # running from source: no install


def test_running_from_names_the_shell_version_of_an_executable_in_shells(tmp_path: Path) -> None:
    root = make_root(tmp_path / "app")
    assert running_from(root, str(root / "shells" / "1.0.0" / "desktop")) == V("1.0.0")
    assert running_from(root, str(root / "desktop-shell")) is None
    assert running_from(root, sys.executable) is None


# -- choosing a shell -----------------------------------------------------------------------------

def shell_release(version: str, rollout: float = 100.0, channel: str = "stable") -> Release:
    return Release(V(version), f"desktop-shell-{version}.tar.gz", Integrity("sha256", bytes(32)), channel=channel,
                   rollout=rollout)


def choose_shell(shells: list[Release], **kwargs: object) -> policy.ShellChoice:
    options: dict[str, object] = {"current": V("1.0.0"), "channel": "stable", "is_bad": lambda v: False,
                                  "pinned": lambda r: None, "install_id": "0" * 32}
    options.update(kwargs)
    return policy.choose_shell(shells, **options)  # type: ignore[arg-type]


def test_the_newest_usable_shell_is_chosen() -> None:
    choice = choose_shell([shell_release("1.1.0"), shell_release("1.2.0"), shell_release("1.3.0")],
                          is_bad=lambda v: v == V("1.3.0"))
    assert choice.release is not None and choice.release.version == V("1.2.0") and choice.needed_by is None


def test_a_runtime_that_needs_a_shell_forces_the_newest_one_that_admits_it() -> None:
    shells = [shell_release("1.1.0", rollout=0), shell_release("1.2.0", rollout=0), shell_release("2.0.0")]
    choice = choose_shell(shells, needed_for=[(V("3.1.0"), ">=1.1,<2")], allowed=None)
    assert choice.release is not None and choice.release.version == V("1.2.0")
    assert choice.needed_by == V("3.1.0")
    # Without the runtime, the rollout keeps 1.x away and 2.0.0 (fully rolled out) is newest anyway.
    assert choose_shell(shells).release.version == V("2.0.0")  # type: ignore[union-attr]
    # The normal choice is kept when it already admits the runtime.
    normal = choose_shell(shells, needed_for=[(V("3.1.0"), ">=1.1")])
    assert normal.release.version == V("2.0.0") and normal.needed_by == V("3.1.0")  # type: ignore[union-attr]


def test_a_needed_shell_still_respects_bad_versions_and_the_admin_cap() -> None:
    from packaging.specifiers import SpecifierSet

    shells = [shell_release("1.1.0"), shell_release("1.2.0")]
    for options in ({"is_bad": lambda v: v == V("1.2.0")}, {"allowed": SpecifierSet("<1.2")}):
        choice = choose_shell(shells, needed_for=[(V("3.0.0"), ">=1.2")], **options)
        # The newest allowed shell is still an update; it just does not bring the runtime.
        assert choice.release is not None and (choice.release.version, choice.needed_by) == (V("1.1.0"), None)


def test_runtimes_needing_a_shell_come_from_host_gate_skips_only() -> None:
    skipped = [Skip(V("2.0.0"), SkipReason.HOST_GATE, "requires shell >=1.5"), Skip(V("1.9.0"), SkipReason.BAD),
               Skip(V("1.8.0"), SkipReason.HOST_GATE)]
    offered = [ReleaseInfo(V("2.0.0"), "stable", requires_shell=">=1.5"),
               ReleaseInfo(V("1.9.0"), "stable", requires_shell=">=1.2"),
               ReleaseInfo(V("1.8.0"), "stable", requires_shell=">=1.1")]
    assert policy.runtimes_needing_shell(skipped, offered) == ((V("2.0.0"), ">=1.5"), (V("1.8.0"), ">=1.1"))


@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8, unique=True),
       st.integers(min_value=1, max_value=30))
def test_a_shell_chosen_for_a_runtime_always_admits_it(minors: list[int], needed: int) -> None:
    shells = [shell_release(f"1.{m}.0", rollout=0) for m in minors]
    choice = choose_shell(shells, needed_for=[(V("9.0.0"), f">=1.{needed}")])
    fitting = [m for m in minors if m >= needed]
    if fitting:
        assert choice.release is not None and choice.release.version == V(f"1.{max(fitting)}.0")
    else:
        assert choice.release is None


# -- the health mark ----------------------------------------------------------------------------

def test_the_mark_is_taken_from_the_environment_written_once_and_commits_the_pointer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path / "app")
    install = InstallRoot(root)
    write_pointer(install.pointer_file, Pointer(V("1.1.0"), last_known_good=V("1.0.0")))
    mark = root / "health" / "42.1.ok"
    monkeypatch.setenv(HEALTH_MARK_ENV, str(mark))
    assert health.take_from_environment() == mark
    assert HEALTH_MARK_ENV not in os.environ  # no child can write it
    assert health.report_healthy() is True
    assert json.loads(mark.read_text())["pid"] == os.getpid()
    mark.unlink()
    assert health.report_healthy() is False and not mark.exists()
    # From source nothing runs from shells/, so nothing was committed; a shell in shells/ commits:
    assert read_pointer(install.pointer_file).known_good is False  # type: ignore[union-attr]
    assert health.commit(install, V("1.1.0")) is True
    pointer = read_pointer(install.pointer_file)
    assert pointer is not None and pointer.known_good and pointer.last_known_good == V("1.0.0")
    assert health.commit(install, V("1.2.0")) is False  # not the pointer's: left alone


def test_under_the_launcher_sigint_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        monkeypatch.delenv(LAUNCHER_ENV, raising=False)
        health.take_from_environment()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # not ours to change
        monkeypatch.setenv(LAUNCHER_ENV, "/x/desktop-shell")
        health.take_from_environment()
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


# -- what the shell that started healthy records for the launcher ---------------------------------

@pytest.fixture
def install(tmp_path: Path) -> InstallRoot:
    root = make_root(tmp_path / "app")
    for version in ("1.1.0", "1.2.0"):
        fake_build(root / "shells" / version, version, "exit 0")
    write_pointer(root / "current.json", Pointer(V("1.2.0"), last_known_good=V("1.1.0")))
    return InstallRoot(root)


def test_the_failed_shell_is_marked_and_the_pointer_moves_to_the_shell_that_started(install: InstallRoot) -> None:
    failure = record_failure(install, V("1.2.0"), exit_code=255, stderr_tail=["[PYI-1:ERROR] no libpython"],
                             started=V("1.1.0"))
    assert (failure.fallback, failure.fallback_source, failure.marked_bad, failure.damaged) == (
        V("1.1.0"), "last known-good", True, False)
    entry = BadVersions(install.bad_file).load().entries[V("1.2.0")]
    assert (entry.exit_code, entry.stderr_tail) == (255, ("[PYI-1:ERROR] no libpython",))
    pointer = read_pointer(install.pointer_file)
    assert pointer is not None and (pointer.version, pointer.known_good) == (V("1.1.0"), True)


def test_when_the_installed_shell_started_the_pointer_goes(install: InstallRoot) -> None:
    record_failure(install, V("1.2.0"), exit_code=1, stderr_tail=[], started=V("1.0.0"))
    assert read_pointer(install.pointer_file) is None


def test_the_pointer_moves_back_only_if_it_still_names_the_failed_shell(install: InstallRoot) -> None:
    write_pointer(install.pointer_file, Pointer(V("1.3.0"), last_known_good=V("1.1.0")))  # a stage moved it
    failure = record_failure(install, V("1.2.0"), exit_code=1, stderr_tail=[], started=V("1.1.0"))
    assert failure.marked_bad and read_pointer(install.pointer_file).version == V("1.3.0")  # type: ignore[union-attr]


def test_the_installed_shell_and_the_healthy_one_are_never_marked(install: InstallRoot) -> None:
    for version in ("1.0.0", "1.1.0"):
        failure = record_failure(install, V(version), exit_code=1, stderr_tail=[], started=V("1.1.0"))
        assert not failure.marked_bad
    assert not install.bad_file.exists()


def test_a_damaged_shell_is_set_aside_not_blamed(install: InstallRoot) -> None:
    directory = install.shell_dir(V("1.2.0"))
    write_record(install.store.record_file(V("1.2.0")),
                 build_record(V("1.2.0"), directory, "desktop", ("_internal/build-info.json",)))
    (directory / "desktop").write_text("#!/bin/sh\n")  # truncated on disk after staging
    failure = record_failure(install, V("1.2.0"), exit_code=139, stderr_tail=[], started=V("1.1.0"))
    assert (failure.damaged, failure.marked_bad, failure.fallback) == (True, False, V("1.1.0"))
    assert not directory.exists() and not list(install.shells_dir.glob(".*"))
    assert not install.bad_file.exists()
    assert read_pointer(install.pointer_file).version == V("1.1.0")  # type: ignore[union-attr]


def test_when_the_mark_cannot_be_written_the_pointer_stays(install: InstallRoot,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from desktop.core.errors import StateError

    def full(*args: object, **kwargs: object) -> None:
        raise StateError("disk full")

    monkeypatch.setattr(BadVersions, "mark", full)
    failure = record_failure(install, V("1.2.0"), exit_code=1, stderr_tail=[], started=V("1.1.0"))
    assert not failure.marked_bad
    assert read_pointer(install.pointer_file).version == V("1.2.0")  # type: ignore[union-attr]


def test_the_launchers_list_is_read_defensively(install: InstallRoot, tmp_path: Path) -> None:
    health_dir = install.health_dir
    health_dir.mkdir()
    (health_dir / "77.1.stderr").write_text("boom\n")
    listing = health_dir / "77.failed"
    listing.write_text("1.2.0 255 1\n../../x 1 2\n1.1.0 notanumber 3\ngarbage\n")
    failures = record_launch_failures(install, listing, V("1.1.0"))
    assert [(str(f.version), f.marked_bad) for f in failures] == [("1.2.0", True)]
    assert BadVersions(install.bad_file).load().entries[V("1.2.0")].stderr_tail == ("boom",)
    elsewhere = tmp_path / "77.failed"
    elsewhere.write_text("1.1.0 1 1\n")
    assert record_launch_failures(install, elsewhere, V("1.0.0")) == []


def test_exit_statuses_in_words_and_a_bounded_stderr_tail(tmp_path: Path) -> None:
    assert describe_exit(139) == "killed by SIGSEGV before it was ready"
    assert describe_exit(255) == "exited with code 255 before it was ready"
    log = tmp_path / "stderr"
    log.write_bytes(b"x" * 200_000 + b"\n" + b"".join(f"line {i}\n".encode() for i in range(100)) + b"\x1b[31mred\n")
    tail = read_tail(log)
    assert len(tail) == 20 and tail[-1] == "\\x1b[31mred" and tail[0] == "line 81"
    assert read_tail(tmp_path / "missing") == [] and read_tail(tmp_path) == []
