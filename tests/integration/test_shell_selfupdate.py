"""The shell updating itself, from source: shell builds on a real signed feed on 127.0.0.1, staged into
a real install root by the generic stager, next to runtimes on the same feed.

The builds are small fake ones (tests/support/installs.py); the frozen app does the same in
tests/e2e/test_shell_update.py.
"""

from __future__ import annotations

import json
import random
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.badlist import BadVersions
from desktop.core.delta import scan_manifest
from desktop.core.errors import ConflictError, NetworkError
from desktop.core.install import selfupdate
from desktop.core.install.artefact import ShellArtefact
from desktop.core.install.root import INSTALL_ROOT_ENV, LAUNCHER_ENV, RESTART_EXIT_CODE, InstallRoot
from desktop.core.pointer import read_pointer
from desktop.core.publisher import FeedPublisher
from desktop.core.publishing import Publisher
from desktop.core.records import read_record
from desktop.core.results import ShellUpdates, SkipReason, UpdateOutcome
from desktop.core.shell import Shell
from tests.support import installs
from tests.support.feed import Feed
from tests.support.installs import fake_build
from tests.support.server import LoopbackServer

V = Version


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    with LoopbackServer() as server:
        yield Feed(tmp_path / "feed", server, tmp_path / "work")


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallRoot:
    return installs.use_root(tmp_path / "app", monkeypatch)


def publish_shell(feed: Feed, tmp_path: Path, version: str, payload: bytes | None = None, **kwargs: object) -> None:
    installs.publish_shell(feed.root, feed.key.private_path, tmp_path / "builds", version, payload, **kwargs)


def shell_for(feed: Feed, tmp_path: Path) -> Shell:
    return Shell(feed.config(tmp_path / "data"))


def test_a_newer_shell_is_staged_into_the_install_root_and_pointed_at(feed: Feed, install: InstallRoot,
                                                                     tmp_path: Path) -> None:
    publish_shell(feed, tmp_path, "1.1.0", notes="new shell")
    feed.server.clear_requests()
    report = shell_for(feed, tmp_path).update_shell()
    assert (report.outcome, report.version, report.updates) == (UpdateOutcome.STAGED, V("1.1.0"),
                                                                ShellUpdates.AVAILABLE)
    staged = install.shell_dir(V("1.1.0"))
    assert (staged / "_internal" / "lib" / "payload.bin").read_bytes() == b"1.1.0" * 1000
    assert (staged / "desktop").stat().st_mode & 0o100
    record = read_record(install.store.record_file(V("1.1.0")))
    assert record is not None and record.entry == "desktop" and "_internal/lib/payload.bin" in record.paths
    pointer = read_pointer(install.pointer_file)
    assert pointer is not None and (pointer.version, pointer.known_good) == (V("1.1.0"), False)
    assert report.bytes_downloaded > 0
    assert not list(install.shells_dir.glob("*.partial")) and not list(install.shells_dir.glob(".*"))
    assert report.restart_exit_code is None  # not started by a launcher: nothing can restart it
    # Once staged, a second check downloads nothing.
    again = shell_for(feed, tmp_path).update_shell()
    assert again.outcome is UpdateOutcome.ALREADY_STAGED and again.bytes_downloaded < 10_000
    info = shell_for(feed, tmp_path).shell_info()
    assert (info.pending, info.installed, info.install_root) == (V("1.1.0"), V("1.0.0"), str(install.root))


def test_started_by_a_launcher_a_staged_shell_offers_restart_to_update(feed: Feed, install: InstallRoot,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAUNCHER_ENV, str(install.launcher))
    publish_shell(feed, tmp_path, "1.1.0")
    report = shell_for(feed, tmp_path).update_shell()
    assert report.restart_exit_code == RESTART_EXIT_CODE
    assert shell_for(feed, tmp_path).shell_info().restart_exit_code == RESTART_EXIT_CODE


def test_runtime_listing_ignores_shells_and_shells_ignore_runtimes_and_other_platforms(feed: Feed,
                                                                                       install: InstallRoot,
                                                                                       tmp_path: Path) -> None:
    publish_shell(feed, tmp_path, "1.1.0")
    other = fake_build(tmp_path / "builds" / "9.0.0-mac", "9.0.0", "echo mac", platform="macos-aarch64")
    Publisher(feed.root).publish_shell(other, [feed.key.private_path])
    feed.publish("1.1.0")  # a runtime with the same version number: a different release, not a conflict
    shell = shell_for(feed, tmp_path)
    check = shell.check()
    assert [str(r.version) for r in check.offered] == ["1.1.0"]
    assert check.available is not None and check.available.notes == "notes for 1.1.0"  # the runtime
    shell_report = shell.update_shell()
    assert (shell_report.outcome, shell_report.version) == (UpdateOutcome.STAGED, V("1.1.0"))
    assert not install.shell_dir(V("9.0.0")).exists()
    # The publisher still refuses the same shell release with other bytes.
    with pytest.raises(ConflictError):
        publish_shell(feed, tmp_path / "again", "1.1.0", payload=b"other bytes")


def test_a_runtime_that_needs_a_newer_shell_pulls_it_in_even_outside_the_shells_rollout(feed: Feed,
                                                                                       install: InstallRoot,
                                                                                       tmp_path: Path) -> None:
    publish_shell(feed, tmp_path, "1.1.0", rollout=0)
    shell = shell_for(feed, tmp_path)
    alone = shell.update_shell()
    assert alone.outcome is UpdateOutcome.UP_TO_DATE
    assert [(s.version, s.reason) for s in alone.skipped] == [(V("1.1.0"), SkipReason.ROLLOUT)]
    feed.publish("1.1.0", requires_shell=">=1.1")
    app = shell.update_app()
    assert app.runtime.outcome is UpdateOutcome.UP_TO_DATE  # this shell cannot run it yet
    assert [(s.version, s.reason) for s in app.runtime.check.skipped] == [  # type: ignore[union-attr]
        (V("1.1.0"), SkipReason.HOST_GATE)]
    assert (app.shell.outcome, app.shell.version, app.shell.needed_by) == (UpdateOutcome.STAGED, V("1.1.0"),
                                                                           V("1.1.0"))


def test_an_unreachable_feed_is_asked_once_for_the_whole_app(feed: Feed, install: InstallRoot,
                                                              tmp_path: Path) -> None:
    publish_shell(feed, tmp_path, "1.1.0")
    feed.server.fault("/feed/metadata/timestamp.json", "status", code=503)
    feed.server.clear_requests()
    app = shell_for(feed, tmp_path).update_app()
    assert app.runtime.outcome is UpdateOutcome.FAILED and isinstance(app.runtime.error, NetworkError)
    assert app.shell.outcome is UpdateOutcome.FAILED and app.shell.error is app.runtime.error
    assert len(feed.server.requests_to("/feed/metadata/timestamp.json")) == 1, "the shell asked the same feed again"
    assert not install.shell_dir(V("1.1.0")).exists()
    feed.server.clear_faults()
    assert shell_for(feed, tmp_path).update_app().shell.outcome is UpdateOutcome.STAGED


def test_a_bad_shell_is_not_staged_again(feed: Feed, install: InstallRoot, tmp_path: Path) -> None:
    publish_shell(feed, tmp_path, "1.1.0")
    BadVersions(install.bad_file).mark(V("1.1.0"), "exited with code 255 before it was ready", 255)
    feed.server.clear_requests()
    report = shell_for(feed, tmp_path).update_shell()
    assert report.outcome is UpdateOutcome.UP_TO_DATE
    assert [(s.version, s.reason) for s in report.skipped] == [(V("1.1.0"), SkipReason.BAD)]
    assert not [r for r in feed.server.requests_to("/feed/targets/") if "desktop-shell-1.1.0" in r.path]
    assert shell_for(feed, tmp_path).clear_bad_shell("1.1.0") == ("1.1.0",)
    assert shell_for(feed, tmp_path).update_shell().outcome is UpdateOutcome.STAGED


def test_an_invalid_shell_release_is_pinned_and_not_downloaded_again(feed: Feed, install: InstallRoot,
                                                                     tmp_path: Path) -> None:
    # Signed as 1.1.0 but the build inside says 1.3.0: the bytes match their digest, the content is wrong.
    wrong = fake_build(tmp_path / "wrong", "1.3.0", "echo wrong")
    archive = tmp_path / "wrong.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(wrong, arcname="desktop-shell-1.3.0")
    custom = {"kind": "shell", "version": "1.1.0", "platform": selfupdate.ShellArtefact(install).platform,
              "channel": "stable", "rollout": 100, "notes": ""}
    FeedPublisher(feed.root).publish_artefact(lambda out: out.write_bytes(archive.read_bytes()),
                                              "desktop-shell-1.1.0-wrong.tar.gz", custom,
                                              [__import__("desktop.core.keys", fromlist=["load_signer"])
                                               .load_signer(feed.key.private_path)],
                                              same_release=lambda c: False)
    report = shell_for(feed, tmp_path).update_shell()
    assert report.outcome is UpdateOutcome.FAILED and report.pinned
    assert "says version 1.3.0, expected 1.1.0" in str(report.error)
    assert not install.shell_dir(V("1.1.0")).exists() and not list(install.shells_dir.glob("*.partial"))
    feed.server.clear_requests()
    again = shell_for(feed, tmp_path).update_shell()
    assert again.outcome is UpdateOutcome.UP_TO_DATE
    assert [(s.version, s.reason) for s in again.skipped] == [(V("1.1.0"), SkipReason.PINNED)]
    assert not [r for r in feed.server.requests_to("/feed/targets/") if "wrong" in r.path]


def test_a_damaged_staged_shell_is_staged_again(feed: Feed, install: InstallRoot, tmp_path: Path) -> None:
    publish_shell(feed, tmp_path, "1.1.0")
    assert shell_for(feed, tmp_path).update_shell().outcome is UpdateOutcome.STAGED
    payload = install.shell_dir(V("1.1.0")) / "_internal" / "lib" / "payload.bin"
    payload.write_bytes(b"x")
    assert ShellArtefact(install).problem(V("1.1.0")) == "_internal/lib/payload.bin is 1 bytes, recorded 5000"
    report = shell_for(feed, tmp_path).update_shell()
    assert report.outcome is UpdateOutcome.STAGED
    assert payload.read_bytes() == b"1.1.0" * 1000


def test_policy_turning_shell_updates_off_asks_nothing_of_the_feed(feed: Feed, install: InstallRoot,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"shell_updates": False, "message": "Managed by IT."}))
    monkeypatch.setenv("DESKTOP_POLICY_FILE", str(policy))
    publish_shell(feed, tmp_path, "1.1.0")
    feed.server.clear_requests()
    shell = shell_for(feed, tmp_path)
    report = shell.update_shell()
    assert (report.outcome, report.updates, report.reason) == (UpdateOutcome.DISABLED, ShellUpdates.MANAGED,
                                                               "Managed by IT.")
    assert feed.server.requests == []
    assert shell.policy_info().text == "Managed by policy: the app's own updates are turned off. Managed by IT."


def test_policy_caps_the_shell_version(feed: Feed, install: InstallRoot, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"shell_versions": "<1.2"}))
    monkeypatch.setenv("DESKTOP_POLICY_FILE", str(policy))
    publish_shell(feed, tmp_path, "1.1.0")
    publish_shell(feed, tmp_path, "1.2.0")
    report = shell_for(feed, tmp_path).update_shell()
    assert (report.outcome, report.version) == (UpdateOutcome.STAGED, V("1.1.0"))
    assert [(s.version, s.reason) for s in report.skipped] == [(V("1.2.0"), SkipReason.POLICY)]


def test_without_an_install_root_the_shell_cannot_update_itself(feed: Feed, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSTALL_ROOT_ENV, raising=False)
    publish_shell(feed, tmp_path, "1.1.0")
    feed.server.clear_requests()
    report = shell_for(feed, tmp_path).update_shell()
    assert (report.outcome, report.updates) == (UpdateOutcome.DISABLED, ShellUpdates.NOT_INSTALLED)
    assert feed.server.requests == []


def test_gc_keeps_installed_pointer_and_last_known_good_and_removes_the_rest(feed: Feed, install: InstallRoot,
                                                                             tmp_path: Path) -> None:
    from desktop.core.install.health import commit

    for version in ("1.1.0", "1.2.0", "1.3.0"):
        publish_shell(feed, tmp_path, version)
        assert shell_for(feed, tmp_path).update_shell().version == V(version)
        commit(install, V(version))
    fake_build(install.shell_dir(V("1.0.5")), "1.0.5", "echo old")  # older, not referenced
    BadVersions(install.bad_file).mark(V("1.0.5"), "x")
    removed = selfupdate.collect_garbage(install, running=None, keep_extra=0)
    assert sorted(removed) == ["1.0.5", "1.1.0"]
    assert sorted(p.name for p in install.shells_dir.iterdir()) == ["1.0.0", "1.2.0", "1.3.0"]
    assert not install.store.record_file(V("1.1.0")).exists()


@pytest.mark.parametrize("point", ["after-download", "mid-extract", "partial-complete", "after-rename",
                                   "after-pointer"])
def test_kill_9_while_staging_a_shell_leaves_a_pointer_to_a_complete_shell_or_none(
        feed: Feed, install: InstallRoot, tmp_path: Path, point: str) -> None:
    import os
    import subprocess
    import sys

    publish_shell(feed, tmp_path, "1.1.0")
    base = ["--data-dir", str(tmp_path / "data"), "--registry", feed.url, "--public-key", str(feed.key.public_path)]
    env = {**os.environ, INSTALL_ROOT_ENV: str(install.root), "DESKTOP_FAULT": point}
    killed = subprocess.run([sys.executable, "-m", "desktop", "update", "--json", *base], capture_output=True,
                            text=True, timeout=120, env=env, check=False)
    assert killed.returncode == -9, killed.stderr  # the fault point was reached: in the shell's stage
    pointer = read_pointer(install.pointer_file)
    if pointer is not None:
        assert ShellArtefact(install).problem(pointer.version) is None
    env.pop("DESKTOP_FAULT")
    again = subprocess.run([sys.executable, "-m", "desktop", "update", "--json", *base], capture_output=True,
                           text=True, timeout=120, env=env, check=False)
    assert again.returncode == 0, again.stderr
    shell = json.loads(again.stdout)["shell"]
    assert (shell["outcome"], shell["version"]) in (("staged", "1.1.0"), ("already-staged", "1.1.0"))
    assert read_pointer(install.pointer_file).version == V("1.1.0")  # type: ignore[union-attr]
    assert ShellArtefact(install).problem(V("1.1.0")) is None
    assert sorted(p.name for p in install.shells_dir.iterdir()) == ["1.0.0", "1.1.0"]  # no partial left


SHELL_PAYLOAD = random.Random(15).randbytes(2 * 1024 * 1024)  # incompressible: the full archive is big


def _shell_release(directory: Path, version: str) -> Path:
    """A build of `version` that shares the big payload and changes one small file."""
    fake_build(directory, version, f"{installs.HEALTHY}\nexit 0",
               extra={"_internal/lib/payload.bin": SHELL_PAYLOAD,
                      "_internal/lib/changes.txt": f"shell {version}\n".encode() * 40})
    return directory


def _same_files(left: Path, right: Path) -> None:
    assert scan_manifest(left).to_bytes() == scan_manifest(right).to_bytes()


def _delta_requests(feed: Feed) -> list[str]:
    return [request.path for request in feed.server.requests if request.path.endswith(".delta")]


def test_a_newer_shell_is_rebuilt_from_a_delta_against_the_installed_one(feed: Feed, install: InstallRoot,
                                                                         tmp_path: Path) -> None:
    installed = install.shell_dir(V("1.0.0"))
    shutil.rmtree(installed)
    _shell_release(installed, "1.0.0")  # the installed shell is the published 1.0.0
    publisher = Publisher(feed.root)
    publisher.publish_shell(installed, [feed.key.private_path])
    newer = publisher.publish_shell(_shell_release(tmp_path / "builds" / "1.1.0", "1.1.0"),
                                    [feed.key.private_path])
    [(base, delta_length)] = newer.deltas
    assert base == "1.0.0" and delta_length < newer.length / 10
    feed.server.clear_requests()

    report = shell_for(feed, tmp_path).update_shell()

    assert (report.outcome, report.version, report.delta) == (UpdateOutcome.STAGED, V("1.1.0"), True)
    assert len(_delta_requests(feed)) == 1
    assert delta_length <= report.bytes_downloaded < newer.length / 10
    _same_files(install.shell_dir(V("1.1.0")), tmp_path / "builds" / "1.1.0")
    pointer = read_pointer(install.pointer_file)
    assert pointer is not None and pointer.version == V("1.1.0")

    # The shell staged from a delta is itself the base of the next one.
    publisher.publish_shell(_shell_release(tmp_path / "builds" / "1.2.0", "1.2.0"), [feed.key.private_path])
    feed.server.clear_requests()
    again = shell_for(feed, tmp_path).update_shell()
    assert (again.outcome, again.version, again.delta) == (UpdateOutcome.STAGED, V("1.2.0"), True)
    assert [path.rsplit(".from-", 1)[1] for path in _delta_requests(feed)] == ["1.1.0.delta"]
    _same_files(install.shell_dir(V("1.2.0")), tmp_path / "builds" / "1.2.0")


def test_an_installed_shell_that_differs_from_its_release_gets_the_full_archive(feed: Feed, install: InstallRoot,
                                                                                tmp_path: Path) -> None:
    installed = install.shell_dir(V("1.0.0"))
    publisher = Publisher(feed.root)
    publisher.publish_shell(_shell_release(tmp_path / "builds" / "1.0.0", "1.0.0"), [feed.key.private_path])
    newer = publisher.publish_shell(_shell_release(tmp_path / "builds" / "1.1.0", "1.1.0"),
                                    [feed.key.private_path])
    assert installed.is_dir()  # installed, but not the bytes 1.0.0 was published with: no base
    feed.server.clear_requests()

    report = shell_for(feed, tmp_path).update_shell()

    assert (report.outcome, report.version, report.delta) == (UpdateOutcome.STAGED, V("1.1.0"), False)
    assert _delta_requests(feed) == [] and report.bytes_downloaded >= newer.length
    _same_files(install.shell_dir(V("1.1.0")), tmp_path / "builds" / "1.1.0")
    assert not report.pinned and BadVersions(install.bad_file).load().entries == {}
