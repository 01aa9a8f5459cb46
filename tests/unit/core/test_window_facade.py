"""What the façade tells the window: problems in the user's terms, what's new once, reminders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core import errors, policy
from desktop.core.results import (
    CheckReport,
    Problem,
    ReleaseInfo,
    UpdateOutcome,
    UpdateReport,
)
from desktop.core.shell import Shell, network_available

DAY = 86400.0
V = Version


@pytest.mark.parametrize(("error", "online", "problem"), [
    (errors.NetworkError("cannot reach x: [Errno -2] Name or service not known"), True, Problem.UNREACHABLE),
    (errors.NetworkError("timed out"), False, Problem.OFFLINE),
    (errors.DownloadError("interrupted"), False, Problem.OFFLINE),
    (errors.DownloadError("interrupted"), True, Problem.DOWNLOAD_INTERRUPTED),
    (errors.RegistryError("HTTP 404"), False, Problem.BAD_ANSWER),  # an answer came: not offline
    (errors.UnexpectedContentError("an HTML page"), True, Problem.DOWNLOAD_DAMAGED),
    (errors.DigestMismatchError("sha256"), True, Problem.DOWNLOAD_DAMAGED),
    (errors.DiskSpaceError("full"), True, Problem.DISK_FULL),
    (errors.BusyError("staging"), True, Problem.BUSY),
    (errors.HostGateError("needs 2.0"), True, Problem.INCOMPATIBLE),
    (errors.ManifestError("no entry"), True, Problem.BROKEN_RELEASE),
    (errors.UnsafeArchiveError("../x"), True, Problem.BROKEN_RELEASE),
    (errors.TrustError("expired"), True, Problem.NOT_TRUSTED),
    (errors.DataDirError("not yours"), True, Problem.DATA_DIR),
    (errors.StateError("read-only"), True, Problem.DATA_DIR),
    (PermissionError(13, "denied"), True, Problem.DATA_DIR),
    (errors.UsageError("no registry"), True, Problem.NOT_CONFIGURED),
    (errors.CancelledError("quit"), False, Problem.CANCELLED),
    (RuntimeError("surprise"), True, Problem.OTHER),
])
def test_problem_is_decided_from_the_error_type(error: BaseException, online: bool, problem: Problem) -> None:
    assert policy.problem_of(error, online=online) is problem


@pytest.mark.parametrize(("since", "now", "last", "due"), [
    (0.0, 10 * DAY, None, False),  # no staging time known
    (100 * DAY, 102.9 * DAY, None, False),  # not three days yet
    (100 * DAY, 103 * DAY, None, True),
    (100 * DAY, 104 * DAY, 103.5 * DAY, False),  # reminded half a day ago
    (100 * DAY, 104.6 * DAY, 103.5 * DAY, True),  # and again a day later
    (float("nan"), 104 * DAY, None, False),
])
def test_staged_reminder_is_gentle(since: float, now: float, last: float | None, due: bool) -> None:
    assert policy.staged_reminder_due(since, now=now, last_reminded=last) is due


def release(version: str, notes: str = "") -> ReleaseInfo:
    return ReleaseInfo(V(version), "stable", notes or f"notes for {version}")


def test_notes_for_take_every_release_between_newest_first_once() -> None:
    offered = [release("1.0.0"), release("1.2.0"), release("1.1.0"), release("1.1.0", "again"), release("1.3.0")]
    notes = policy.notes_for(offered, current=V("1.0.0"), target=V("1.2.0"))
    assert [(str(r.version), r.notes) for r in notes] == [("1.2.0", "notes for 1.2.0"), ("1.1.0", "notes for 1.1.0")]


def staged(current: str, version: str, *offered: str) -> UpdateReport:
    check = CheckReport(V(current), release(version), tuple(release(v) for v in offered))
    return UpdateReport(UpdateOutcome.STAGED, V(version), check)


def test_whats_new_is_kept_at_a_stage_merged_over_an_unrun_stage_and_given_once(tmp_path: Path) -> None:
    shell = Shell.open(data_dir=tmp_path / "data")
    shell.keep_release_notes(staged("1.0.0", "1.1.0", "1.0.5", "1.1.0"))
    assert [str(r.version) for r in shell.whats_new(V("1.1.0"))] == ["1.1.0", "1.0.5"]
    # 1.2.0 is staged before 1.1.0 ever ran (the check's current is the pointer's 1.1.0)
    shell.keep_release_notes(staged("1.1.0", "1.2.0", "1.0.5", "1.1.0", "1.2.0"))
    assert shell.whats_new(V("1.1.0")) == ()
    assert [str(r.version) for r in shell.whats_new(V("1.2.0"))] == ["1.2.0", "1.1.0", "1.0.5"]
    shell.whats_new_shown(V("1.2.0"))
    assert shell.whats_new(V("1.2.0")) == (), "once"
    shell.keep_release_notes(UpdateReport(UpdateOutcome.UP_TO_DATE, V("1.2.0")))
    assert shell.whats_new(V("1.2.0")) == ()


def test_whats_new_of_a_damaged_file_is_nothing_not_a_crash(tmp_path: Path) -> None:
    shell = Shell.open(data_dir=tmp_path / "data")
    path = shell.data_dir / "whats-new.json"
    for content in ("{", json.dumps({"version": 5, "releases": "x"}),
                    json.dumps({"version": "1.1.0", "releases": [{"version": "../x"}, 7, {"version": "1.1.0",
                                                                                           "notes": ["no"]}]})):
        path.write_text(content)
        result = shell.whats_new(V("1.1.0"))
        assert all(isinstance(r, ReleaseInfo) for r in result)
        assert [str(r.version) for r in result] in ([], ["1.1.0"])


def test_rollback_preview_without_a_staged_version_is_none(tmp_path: Path) -> None:
    """(With one, tests/gui/test_buttons.py checks that the question names both versions.)"""
    shell = Shell.open(data_dir=tmp_path / "data")
    assert shell.rollback_preview() is None


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs unshare and root")
def test_network_available_is_false_only_without_any_route() -> None:
    code = "from desktop.core.shell import network_available; print(network_available())"
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[3],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    if "\t00000000\t" in Path("/proc/net/route").read_text():  # this machine has a default route
        assert network_available()
