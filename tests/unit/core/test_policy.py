"""The pure decisions: release choice, launch and fallback, crash verdicts, check schedule, failure classes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from desktop.core import policy
from desktop.core.digests import Integrity
from desktop.core.errors import (
    CancelledError,
    DataDirError,
    DigestMismatchError,
    HostGateError,
    ManifestError,
    NetworkError,
    TrustError,
    UnexpectedContentError,
    UnsafeArchiveError,
)
from desktop.core.pointer import Pointer
from desktop.core.policy import CrashAction, CrashHistory, CrashRules
from desktop.core.registry import Release
from desktop.core.results import FailureClass, SkipReason

V = Version
NEVER: Callable[[Version], bool] = lambda v: False  # noqa: E731


def release(version: str, *, channel: str = "stable", rollout: float = 100.0, requires: str | None = None,
            artefact: str = "a") -> Release:
    return Release(V(version), f"{version}.tgz", Integrity("sha256", bytes(32)), channel=channel,
                   rollout=rollout, requires_shell=requires, extra={"artefact": artefact})


def choose(releases: list[Release], current: str = "1.0.0", **kwargs: object) -> policy.Selection:
    options: dict[str, object] = {"channel": "stable", "is_bad": NEVER, "pinned": lambda r: None,
                                  "shell_version": "1.0.0", "install_id": "0" * 32}
    options.update(kwargs)
    return policy.choose_release(releases, current=V(current), **options)  # type: ignore[arg-type]


def test_newest_usable_release_wins_and_skips_are_explained() -> None:
    releases = [release("1.1.0"), release("1.2.0"), release("1.3.0", requires=">=2"), release("1.4.0")]
    selection = choose(releases, is_bad=lambda v: v == V("1.4.0"))
    assert selection.release is not None and selection.release.version == V("1.2.0")
    assert [(s.version, s.reason) for s in selection.skipped] == [
        (V("1.4.0"), SkipReason.BAD), (V("1.3.0"), SkipReason.HOST_GATE)]
    assert [r.version for r in selection.between] == [V("1.4.0"), V("1.3.0"), V("1.2.0")]


def test_pinned_skipped_and_policy_reasons() -> None:
    releases = [release("1.1.0"), release("1.2.0"), release("1.3.0"), release("1.4.0")]
    selection = choose(releases, pinned=lambda r: "no entry" if r.version == V("1.3.0") else None,
                       skipped_by_user={V("1.2.0")}, allowed=SpecifierSet("<1.3.5"))
    assert selection.release is not None and selection.release.version == V("1.1.0")
    assert [s.reason for s in selection.skipped] == [SkipReason.POLICY, SkipReason.PINNED, SkipReason.SKIPPED]
    assert selection.skipped[1].detail == "no entry"


def test_channels_include_the_more_stable_ones() -> None:
    releases = [release("1.1.0", channel="stable"), release("1.2.0", channel="beta"),
                release("1.3.0", channel="alpha")]
    assert choose(releases, channel="stable").release.version == V("1.1.0")  # type: ignore[union-attr]
    assert choose(releases, channel="beta").release.version == V("1.2.0")  # type: ignore[union-attr]
    assert choose(releases, channel="alpha").release.version == V("1.3.0")  # type: ignore[union-attr]
    assert choose(releases, channel="stable").skipped == (), "other channels are not noise"


def test_rollout_skips_outside_installs_unless_bypassed() -> None:
    inside = next(f"{i:032x}" for i in range(1000) if policy.rollout_bucket(f"{i:032x}", V("1.2.0")) < 10)
    outside = next(f"{i:032x}" for i in range(1000) if policy.rollout_bucket(f"{i:032x}", V("1.2.0")) >= 10)
    releases = [release("1.1.0"), release("1.2.0", rollout=10)]
    assert choose(releases, install_id=inside).release.version == V("1.2.0")  # type: ignore[union-attr]
    out = choose(releases, install_id=outside)
    assert out.release is not None and out.release.version == V("1.1.0")
    assert out.skipped[0].reason is SkipReason.ROLLOUT
    assert choose(releases, install_id=outside, bypass_rollout=True).release.version == V("1.2.0")  # type: ignore[union-attr]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from(["stable", "beta"]),
                          st.booleans()), max_size=12), st.integers(0, 5))
def test_choice_is_newer_than_current_and_never_bad(specs: list[tuple[int, int, str, bool]], current: int) -> None:
    releases = [release(f"1.{a}.{b}", channel=ch) for a, b, ch, _ in specs]
    bad = {V(f"1.{a}.{b}") for a, b, _, is_bad in specs if is_bad}
    selection = choose(releases, current=f"1.{current}.0", is_bad=lambda v: v in bad)
    chosen = selection.release
    if chosen is not None:
        assert chosen.version > V(f"1.{current}.0") and chosen.version not in bad and chosen.channel == "stable"
        assert all(r.version <= chosen.version for r in releases if r.channel == "stable"
                   and r.version not in bad and r.version > V(f"1.{current}.0"))
    for skip in selection.skipped:
        assert skip.version > V(f"1.{current}.0")


@given(st.text(min_size=1, max_size=40), st.integers(0, 10**6))
def test_rollout_bucket_is_stable_and_in_range(install: str, minor: int) -> None:
    bucket = policy.rollout_bucket(install, V(f"1.{minor}"))
    assert 0 <= bucket < 100 and bucket == policy.rollout_bucket(install, V(f"1.{minor}"))


def test_launch_choice_follows_the_rules() -> None:
    bundled = V("1.0.0")
    pointer = Pointer(V("1.2.0"), known_good=False, last_known_good=V("1.1.0"))
    ok = policy.choose_launch(pointer, bundled=bundled, is_bad=NEVER, problem=lambda v: None)
    assert ok.version == V("1.2.0") and not ok.repair
    broken = policy.choose_launch(pointer, bundled=bundled, is_bad=NEVER,
                                  problem=lambda v: "entry missing" if v == V("1.2.0") else None)
    assert broken.version == V("1.1.0") and broken.repair and broken.repaired == Pointer(V("1.1.0"), known_good=True)
    both = policy.choose_launch(pointer, bundled=bundled, is_bad=lambda v: True, problem=lambda v: None)
    assert both.version is None and both.repair and both.repaired is None
    older = policy.choose_launch(Pointer(V("0.9.0")), bundled=bundled, is_bad=NEVER, problem=lambda v: None)
    assert older.version is None and older.repair, "a newer bundled runtime wins and the stale pointer goes"
    assert policy.choose_launch(None, bundled=bundled, is_bad=NEVER, problem=lambda v: None).version is None


def test_fallback_is_explicit_and_never_the_failed_version() -> None:
    bundled = V("1.0.0")
    pointer = Pointer(V("1.2.0"), known_good=True, last_known_good=V("1.1.0"))
    assert policy.choose_fallback(V("1.3.0"), pointer, bundled=bundled, is_bad=NEVER,
                                  usable=lambda v: True) == V("1.2.0"), "a stage moved on: the committed one runs"
    assert policy.choose_fallback(V("1.2.0"), pointer, bundled=bundled, is_bad=NEVER,
                                  usable=lambda v: True) == V("1.1.0")
    assert policy.choose_fallback(V("1.2.0"), pointer, bundled=bundled, is_bad=NEVER,
                                  usable=lambda v: False) is None
    assert policy.choose_fallback(V("1.2.0"), pointer, bundled=bundled, is_bad=lambda v: v == V("1.1.0"),
                                  usable=lambda v: True) is None


@given(st.lists(st.floats(0, 2000, allow_nan=False), min_size=1, max_size=40), st.booleans())
def test_crash_loops_always_end(uptimes: list[float], bundled: bool) -> None:
    rules = CrashRules()
    history = CrashHistory()
    short_in_a_row = 0
    for uptime in uptimes:
        verdict = policy.crash_verdict(history, uptime=uptime, bundled=bundled, rules=rules)
        history = verdict.history
        short_in_a_row = 1 if uptime >= rules.stable_s else short_in_a_row + 1
        if short_in_a_row >= rules.max_short_runs:
            assert verdict.action is not CrashAction.RESTART, "a crash loop is never restarted for ever"
        if verdict.action is not CrashAction.RESTART:
            assert (verdict.action is CrashAction.GIVE_UP) == bundled, "the bundled runtime is never marked bad"
            return
        assert 0 < verdict.delay <= rules.backoff_cap_s


def test_crash_every_13_seconds_is_a_loop() -> None:
    history = CrashHistory()
    actions = []
    for _ in range(5):
        verdict = policy.crash_verdict(history, uptime=13.0, bundled=False)
        history = verdict.history
        actions.append(verdict.action)
    assert actions[:4] == [CrashAction.RESTART] * 4 and actions[4] is CrashAction.MARK_BAD


def test_a_long_healthy_run_resets_the_count() -> None:
    history = CrashHistory(short_runs=4, early=0)
    verdict = policy.crash_verdict(history, uptime=3600.0, bundled=False)
    assert verdict.action is CrashAction.RESTART and verdict.history.short_runs == 1


def test_three_early_crashes_mark_a_staged_version_bad() -> None:
    history = CrashHistory()
    for _ in range(2):
        history = policy.crash_verdict(history, uptime=1.0, bundled=False).history
    assert policy.crash_verdict(history, uptime=1.0, bundled=False).action is CrashAction.MARK_BAD
    assert policy.crash_verdict(history, uptime=1.0, bundled=True).action is CrashAction.RESTART


def test_interrupted_starts_count_only_when_they_repeat() -> None:
    assert not policy.interrupted_start_is_crash(1) and policy.interrupted_start_is_crash(2)


@given(st.floats(60, 10**6), st.integers(0, 100), st.floats(0, 0.999999))
def test_next_check_is_bounded(interval: float, failures: int, rand: float) -> None:
    delay = policy.next_check_delay(interval=interval, failures=failures, rand=rand)
    if failures:
        assert policy.MIN_RETRY_S <= delay <= max(interval, policy.MIN_RETRY_S)
    else:
        assert 0.9 * interval <= delay <= 1.1 * interval


def test_backoff_grows_then_caps() -> None:
    assert [policy.backoff(n, base=1, cap=10) for n in range(6)] == [0, 1, 2, 4, 8, 10]
    assert policy.next_check_delay(interval=3600, failures=1, rand=0) == 60
    assert policy.next_check_delay(interval=3600, failures=10, rand=0) == 3600


@pytest.mark.parametrize("error,kind", [
    (NetworkError("x"), FailureClass.TRANSIENT), (DigestMismatchError("x"), FailureClass.TRANSIENT),
    (UnexpectedContentError("x"), FailureClass.TRANSIENT), (ManifestError("x"), FailureClass.DETERMINISTIC),
    (UnsafeArchiveError("x"), FailureClass.DETERMINISTIC), (HostGateError("x"), FailureClass.DETERMINISTIC),
    (TrustError("x"), FailureClass.TRUST), (CancelledError("x"), FailureClass.CANCELLED),
    (DataDirError("x"), FailureClass.LOCAL)])
def test_failure_classes(error: Exception, kind: FailureClass) -> None:
    assert policy.classify(error) is kind


def test_gc_plan_keeps_what_a_user_may_need_and_removes_bad_first() -> None:
    staged = [V("1.1.0"), V("1.2.0"), V("1.3.0"), V("1.4.0"), V("1.5.0")]
    plan = policy.plan_gc(staged, protected={V("1.2.0"), V("1.1.0")}, is_bad=lambda v: v == V("1.5.0"),
                          keep_extra=1)
    assert plan.keep == {V("1.1.0"), V("1.2.0"), V("1.4.0")}
    assert plan.remove == (V("1.5.0"), V("1.3.0"))
