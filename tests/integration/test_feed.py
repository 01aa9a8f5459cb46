"""The TUF feed: publish with `desktop publish`, stage with the ngclient-based client."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.errors import TrustError, UsageError
from desktop.core.feedrepo import FeedRepository
from desktop.core.keys import generate, load_signer
from desktop.core.publisher import KeyNotAuthorisedError
from desktop.core.registry.feed import channels_for, install_id, rollout_bucket
from desktop.core.stager import StageOutcome, verify_staged
from desktop.core.state import read_pointer
from desktop.core.updater import check, update
from tests.integration.conftest import run_cli
from tests.support.feed import Feed
from tests.support.server import LoopbackServer


@pytest.fixture
def feed(server: LoopbackServer, tmp_path: Path) -> Iterator[Feed]:
    yield Feed(tmp_path / "feed", server, tmp_path / "work")


def test_publish_then_stage_and_launch(feed: Feed, data_dir: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(data_dir)
    result = update(config)
    assert result.outcome is StageOutcome.STAGED and result.version == Version("1.1.0")
    assert verify_staged(config, Version("1.1.0"))
    launched = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(launched.stdout)["version"] == "1.1.0"
    # Consistent snapshots: hash-prefixed targets, versioned metadata.
    assert any(p.name.endswith("notes-runtime-1.1.0.tar.gz") and len(p.name.split(".")[0]) == 64
               for p in (feed.root / "targets").iterdir())
    assert (feed.root / "metadata" / "1.root.json").is_file()
    assert (feed.root / "metadata" / "2.targets.json").is_file()


def test_up_to_date_check_costs_only_timestamp(feed: Feed, data_dir: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(data_dir)
    assert update(config).outcome is StageOutcome.STAGED
    feed.server.clear_requests()
    result = check(config)
    assert result.available is None and result.not_modified
    paths = sorted(r.path for r in feed.server.requests)
    assert paths == ["/feed/metadata/2.root.json", "/feed/metadata/timestamp.json"]
    wire = sum(r.request_bytes + r.response_header_bytes + r.bytes_sent for r in feed.server.requests)
    print(f"up-to-date feed check: {len(paths)} requests, {wire} bytes on the wire")
    assert wire < 4096


def test_tampered_archive_bytes_are_refused(feed: Feed, data_dir: Path) -> None:
    feed.publish("1.1.0")
    target = feed.target_file("notes-runtime-1.1.0")
    data = bytearray(target.read_bytes())
    data[200] ^= 0xFF
    target.write_bytes(bytes(data))
    config = feed.config(data_dir)
    result = update(config)
    assert result.outcome is StageOutcome.FAILED and "hash" in str(result.error)
    assert read_pointer(config.data.pointer_file) is None
    assert not any(config.data.versions_dir.iterdir())


def test_tampered_targets_metadata_is_refused(feed: Feed, data_dir: Path) -> None:
    feed.publish("1.1.0")
    path = feed.root / "metadata" / "2.targets.json"
    doc = json.loads(path.read_text())
    for target in doc["signed"]["targets"].values():
        if "custom" in target:
            target["custom"]["notes"] = "evil"
    path.write_text(json.dumps(doc))
    config = feed.config(data_dir)
    with pytest.raises(TrustError, match="signed|signature"):
        check(config)
    assert read_pointer(config.data.pointer_file) is None


def test_feed_signed_by_another_key_is_refused(feed: Feed, data_dir: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "other.key")
    feed.publish("1.1.0", key=other.private_path)
    with pytest.raises(TrustError, match="pinned key"):
        check(feed.config(data_dir))


def test_expired_timestamp_is_refused_and_runtime_keeps_running(feed: Feed, data_dir: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(data_dir)
    assert update(config).outcome is StageOutcome.STAGED
    feed.publish("1.2.0")
    feed.repo.refresh(load_signer(feed.key.private_path), timestamp_expiry=timedelta(seconds=-60))
    result = update(config)
    assert result.outcome is StageOutcome.FAILED and "expired" in str(result.error)
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0")
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["version"] == "1.1.0" and "expired" in status["last_check"]["error"]
    launched = run_cli("launch", "--until-ready", "--json", "--data-dir", str(data_dir))
    assert json.loads(launched.stdout)["version"] == "1.1.0"
    # A publisher refresh repairs it.
    feed.repo.refresh(load_signer(feed.key.private_path))
    assert update(config).version == Version("1.2.0")


def test_replayed_older_timestamp_and_snapshot_are_refused(feed: Feed, data_dir: Path) -> None:
    feed.publish("1.1.0")
    meta = feed.root / "metadata"
    old_timestamp = (meta / "timestamp.json").read_bytes()
    old_snapshot = (meta / "snapshot.json").read_bytes()
    feed.publish("1.2.0")
    config = feed.config(data_dir)
    assert update(config).version == Version("1.2.0")
    (meta / "timestamp.json").write_bytes(old_timestamp)
    (meta / "snapshot.json").write_bytes(old_snapshot)
    with pytest.raises(TrustError, match="older|rollback"):
        check(config)


def test_root_rotation_then_publish_with_new_key(feed: Feed, data_dir: Path, tmp_path: Path) -> None:
    feed.publish("1.1.0")
    config = feed.config(data_dir)  # pins the original key
    assert update(config).outcome is StageOutcome.STAGED
    new = generate(tmp_path / "new.key")
    result = run_cli("publish", "--feed", str(feed.root), "--key", str(feed.key.private_path),
                     "--rotate-root", str(new.private_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["root_version"] == 2
    feed.publish("1.2.0", key=new.private_path)
    assert update(config).version == Version("1.2.0")
    # The old key can no longer publish: refused before anything is written.
    with pytest.raises(KeyNotAuthorisedError, match="targets role in root v2"):
        feed.publish("1.3.0", key=feed.key.private_path)
    assert check(config).available is None
    # A fresh install pinned to the original key walks the rotation to the new key's release.
    fresh = check(feed.config(tmp_path / "fresh-data"))
    assert fresh.available is not None and fresh.available.version == Version("1.2.0")


def test_rollout_buckets_are_deterministic_and_outside_installs_get_previous(feed: Feed, data_dir: Path) -> None:
    config = feed.config(data_dir)
    iid = install_id(config)
    assert install_id(config) == iid, "created once"
    bucket = rollout_bucket(iid, "1.2.0")
    assert bucket == rollout_bucket(iid, "1.2.0") and 0 <= bucket < 100
    feed.publish("1.1.0")
    below = max(0.0, bucket - 1)
    feed.publish("1.2.0", rollout=below)
    result = check(config)
    assert result.available is not None and result.available.version == Version("1.1.0")
    manual = check(config.with_overrides(manual_check=True))
    assert manual.available is not None and manual.available.version == Version("1.2.0")
    feed.publish("1.2.0", rollout=min(100.0, bucket + 1))  # widen the rollout: same bytes, new custom
    result = check(config)
    assert result.available is not None and result.available.version == Version("1.2.0")


def test_rollout_fraction_is_roughly_right() -> None:
    inside = sum(rollout_bucket(f"{i:032x}", "2.0.0") < 25 for i in range(4000))
    assert 800 < inside < 1200


def test_channel_fallthrough(feed: Feed, tmp_path: Path) -> None:
    assert channels_for("beta") == ("beta", "stable")
    feed.publish("1.1.0", channel="stable")
    feed.publish("1.2.0", channel="beta")
    stable = feed.config(tmp_path / "stable-user")
    beta = feed.config(tmp_path / "beta-user", channel="beta")
    assert check(stable).available.version == Version("1.1.0")  # type: ignore[union-attr]
    assert check(beta).available.version == Version("1.2.0")  # type: ignore[union-attr]
    feed.publish("1.3.0", channel="stable")
    assert check(beta).available.version == Version("1.3.0")  # type: ignore[union-attr]


def test_publish_is_reproducible(feed: Feed, tmp_path: Path) -> None:
    src = feed.runtime("1.1.0")
    signer = load_signer(feed.key.private_path)
    first = FeedRepository(tmp_path / "a").publish(src, signer)
    os.utime(src / "runtime.json", (1, 1))
    second = FeedRepository(tmp_path / "b").publish(src, signer)
    assert (first.sha256, first.length) == (second.sha256, second.length)
    again = FeedRepository(tmp_path / "a").publish(src, signer)
    assert again.unchanged


def test_publish_refuses_different_bytes_for_a_published_version(feed: Feed) -> None:
    feed.publish("1.1.0")
    with pytest.raises(UsageError, match="different bytes"):
        feed.publish("1.1.0", extra_files={"app/extra.txt": b"changed"})


def test_publish_refuses_invalid_runtime_dir(feed: Feed, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("publish", str(empty), "--feed", str(feed.root), "--key", str(feed.key.private_path))
    assert result.returncode == 1 and "runtime.json" in result.stderr
    broken = feed.runtime("1.1.0")
    (broken / "app" / "main.py").unlink()
    result = run_cli("publish", str(broken), "--feed", str(feed.root), "--key", str(feed.key.private_path))
    assert result.returncode == 1 and "entry point" in result.stderr
    assert not (feed.root / "metadata").exists(), "nothing was written"


def test_keygen_contract(tmp_path: Path) -> None:
    out = tmp_path / "k" / "signing.key"
    result = run_cli("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert printed.startswith("ed25519:") and len(printed) == len("ed25519:") + 64
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert (tmp_path / "k" / "signing.key.pub").read_text().strip() == printed
    again = run_cli("keygen", "--out", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_cli_publish_and_update_with_public_key_file(feed: Feed, data_dir: Path, tmp_path: Path) -> None:
    src = feed.runtime("1.4.0")
    published = run_cli("publish", str(src), "--feed", str(feed.root), "--key", str(feed.key.private_path),
                        "--channel", "stable", "--notes", "Faster notes", "--format", "zip", "--json")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["version"] == "1.4.0"
    base = ["--data-dir", str(data_dir), "--registry", feed.url, "--public-key", str(feed.key.public_path)]
    checked = run_cli("check", "--json", *base)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["available"] == "1.4.0"
    assert json.loads(checked.stdout)["notes"] == "Faster notes"
    updated = run_cli("update", "--json", *base)
    assert json.loads(updated.stdout)["outcome"] == "staged", updated.stderr
    refreshed = run_cli("publish", "--refresh", "--feed", str(feed.root), "--key", str(feed.key.private_path))
    assert refreshed.returncode == 0 and "timestamp" in refreshed.stdout
    assert json.loads(run_cli("update", "--json", *base).stdout)["outcome"] == "up-to-date"


def test_offline_feed_reports_offline(data_dir: Path, feed: Feed) -> None:
    feed.publish("1.1.0")
    config = feed.config(data_dir).with_overrides(registry_url="http://127.0.0.1:9/feed")
    result = update(config)
    assert result.outcome is StageOutcome.FAILED
    status = json.loads(run_cli("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert status["last_check"]["result"] == "offline" and status["source"] == "bundled"
    shutil.rmtree(feed.root)
