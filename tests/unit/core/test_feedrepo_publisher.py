"""The publisher's parts: switch order, expiry windows, key checks, the lock, file modes, the old interface."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Root

from desktop.core import pack
from desktop.core.feedrepo import FeedRepository
from desktop.core.keys import generate, load_signer, load_signers
from desktop.core.publisher import (
    FORMATS,
    FeedBusyError,
    FeedPublisher,
    FeedStateError,
    KeyNotAuthorisedError,
    ThresholdError,
    expiry_report,
    feed_status,
)
from desktop.core.publisher.draft import resolve_thresholds
from desktop.core.publisher.expiry import now_utc
from desktop.core.publisher.files import FeedLayout, Staging, commit_rank, feed_lock, write_public_file
from desktop.core.publisher.signing import require
from desktop.devtools import derive_runtime


@pytest.fixture
def signers(tmp_path: Path) -> list[CryptoSigner]:
    return [load_signer(generate(tmp_path / "keys" / f"k{i}.key").private_path) for i in range(3)]


def test_staged_files_go_live_targets_first_timestamp_then_root_last() -> None:
    staged = ["metadata/root.json", "metadata/timestamp.json", "metadata/targets.json", "metadata/12.snapshot.json",
              "metadata/3.root.json", "targets/ab.index.json", "metadata/snapshot.json", "metadata/12.targets.json",
              "metadata/9.snapshot.json", "targets/cd.app-1.0.tar.gz"]
    assert sorted(staged, key=commit_rank) == [
        "targets/ab.index.json", "targets/cd.app-1.0.tar.gz",
        "metadata/9.snapshot.json", "metadata/12.snapshot.json", "metadata/12.targets.json",
        "metadata/snapshot.json", "metadata/targets.json",
        "metadata/timestamp.json",
        "metadata/3.root.json", "metadata/root.json",
    ]


def test_commit_renames_in_that_order_and_leaves_everything_world_readable(tmp_path: Path) -> None:
    layout = FeedLayout(tmp_path / "feed")
    layout.root.mkdir()
    staging = Staging(layout)
    for name in ("timestamp.json", "2.root.json", "4.targets.json"):
        staging.add_metadata(name, name.encode())
    staging.add_target_bytes("ff.index.json", b"[]")
    seen: list[str] = []
    previous = os.umask(0o077)
    try:
        staging.commit(seen.append)
    finally:
        os.umask(previous)
        staging.discard()
    assert seen == ["replace targets/ff.index.json", "replace metadata/4.targets.json",
                    "replace metadata/timestamp.json", "replace metadata/2.root.json"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in layout.root.glob("*/*")} == {0o644}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (layout.metadata, layout.targets)} == {0o755}


def test_public_files_are_0644_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        write_public_file(tmp_path / "x", b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o644


def test_expiry_report_warns_from_30_days_before_root_and_targets_expire(
        signers: list[CryptoSigner], tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    FeedPublisher(feed).create(signers[:1])
    created = now_utc()

    def at(days: float, **kwargs: timedelta) -> dict[str, tuple[bool, float]]:
        return {e.role: (e.needs_key, e.days_left)
                for e in expiry_report(feed, now=created + timedelta(days=days), **kwargs)}

    assert at(334)["root"][0] is False and at(336)["root"][0] is True
    assert at(336)["targets"][0] is True
    assert at(4)["timestamp"][0] is False and at(5.5)["timestamp"][0] is True, "a stopped cron shows in 2 days"
    assert at(22)["snapshot"][0] is False and at(24)["snapshot"][0] is True
    assert at(306, window=timedelta(days=60))["root"][0] is True
    role, expires, days_left, needs_key = expiry_report(feed, now=created)[0]
    assert (role, needs_key) == ("root", False) and round(days_left) == 365 and expires > created


def test_a_role_expired_reads_as_such(signers: list[CryptoSigner], tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    FeedPublisher(feed).create(signers[:1])
    entries = {e.role: e for e in expiry_report(feed, now=now_utc() + timedelta(days=8))}
    assert entries["timestamp"].expired and not entries["root"].expired
    assert (entries["timestamp"].warning() or "").startswith("WARNING: the feed's timestamp metadata EXPIRED on")
    assert entries["root"].warning() is None


def test_key_checks_name_the_role_and_the_key(signers: list[CryptoSigner]) -> None:
    root = Root()
    for signer in signers[:2]:
        root.add_key(signer.public_key, "targets")
    root.roles["targets"].threshold = 2
    feed = Path("/srv/feed")
    with pytest.raises(KeyNotAuthorisedError) as refused:
        require(root, "targets", signers[2:], feed)
    assert str(refused.value).startswith(f"key {signers[2].public_key.keyid[:16]} is not authorised for the "
                                         "targets role in root v1 of /srv/feed")
    with pytest.raises(ThresholdError, match="needs signatures from 2 of its keys .* provide 1"):
        require(root, "targets", signers[:1] + signers[2:], feed)
    assert require(root, "targets", signers, feed) == signers[:2]


def test_thresholds_default_to_the_current_ones(signers: list[CryptoSigner]) -> None:
    root = Root()
    root.roles["snapshot"].threshold = 2
    assert resolve_thresholds(None, root) == {"root": 1, "targets": 1, "snapshot": 2, "timestamp": 1}
    assert resolve_thresholds({"root": 3}, root)["root"] == 3
    assert resolve_thresholds(2, None) == dict.fromkeys(("root", "targets", "snapshot", "timestamp"), 2)


def test_the_lock_refuses_a_second_holder_at_once(tmp_path: Path) -> None:
    layout = FeedLayout(tmp_path)
    with feed_lock(layout, 0), pytest.raises(FeedBusyError, match=r"\.publish\.lock\); try again"):
        with feed_lock(layout, 0):
            pass
    with feed_lock(layout, 0):
        pass  # released


def test_formats_come_from_the_packer() -> None:
    assert tuple(pack.FORMATS) == FORMATS


def test_load_signers_keeps_each_key_once(tmp_path: Path) -> None:
    a = generate(tmp_path / "a.key").private_path
    b = generate(tmp_path / "b.key").private_path
    loaded = load_signers([a, b, a])
    assert [s.public_key.keyid for s in loaded] == [load_signer(a).public_key.keyid, load_signer(b).public_key.keyid]


def test_the_single_key_interface_still_works(signers: list[CryptoSigner], tmp_path: Path) -> None:
    repo = FeedRepository(tmp_path / "feed")
    assert not repo.exists()
    repo.publish(derive_runtime(tmp_path / "rt", "1.1.0"), signers[0], rollout=25, notes="n")
    assert repo.exists() and repo.releases()[0]["rollout"] == 25
    assert repo.refresh(signers[0]) == 3
    assert repo.rotate_root(signers[0], signers[1]) == 2
    with pytest.raises(KeyNotAuthorisedError):
        repo.refresh(signers[0])


def test_feed_status_shows_versions_releases_and_the_warnings_to_act_on(
        signers: list[CryptoSigner], tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    FeedPublisher(feed).publish(derive_runtime(tmp_path / "rt", "1.1.0"), signers[:1], channel="beta")
    status = feed_status(feed)
    assert (status.root_version, status.targets_version, status.timestamp_version) == (1, 2, 2)
    assert [(r["version"], r["channel"]) for r in status.releases] == [("1.1.0", "beta")]
    assert status.warnings == () and [e.role for e in status.expiry] == ["root", "targets", "snapshot", "timestamp"]
    later = feed_status(feed, now=now_utc() + timedelta(days=350))
    assert any(w.startswith("WARNING: the feed's root metadata expires in 15 days") for w in later.warnings)
    with pytest.raises(FeedStateError, match="holds no feed"):
        feed_status(tmp_path / "elsewhere")
