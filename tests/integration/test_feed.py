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

from desktop.core.errors import ConflictError, TrustError
from desktop.core.feedrepo import FeedRepository
from desktop.core.keys import generate, load_signer
from desktop.core.launching import staged_problem
from desktop.core.pointer import read_pointer
from desktop.core.policy import channels_for, rollout_bucket
from desktop.core.publisher import KeyNotAuthorisedError
from desktop.core.results import UpdateOutcome as StageOutcome
from desktop.core.updater import install_id
from tests.integration.conftest import run_cli
from tests.support.feed import Feed
from tests.support.server import LoopbackServer
from tests.support.shells import check, update


def verify_staged(config: object, version: Version) -> bool:
    return staged_problem(config, version, full=True) is None  # type: ignore[arg-type]


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
    assert result.outcome is StageOutcome.FAILED and "digest" in str(result.error)
    assert not result.pinned, "a tampered mirror is not the release's fault"
    assert read_pointer(config.data.pointer_file) is None
    assert not any(config.data.versions_dir.iterdir())
    target.write_bytes(bytes(data[:200]) + bytes([data[200] ^ 0xFF]) + bytes(data[201:]))
    assert update(config).outcome is StageOutcome.STAGED, "once the mirror is fixed, the release stages"


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
    bucket = rollout_bucket(iid, Version("1.2.0"))
    assert bucket == rollout_bucket(iid, Version("1.2.0")) and 0 <= bucket < 100
    feed.publish("1.1.0")
    below = max(0.0, bucket - 1)
    feed.publish("1.2.0", rollout=below)
    result = check(config)
    assert result.available is not None and result.available.version == Version("1.1.0")
    manual = check(config, bypass_rollout=True)
    assert manual.available is not None and manual.available.version == Version("1.2.0")
    feed.publish("1.2.0", rollout=min(100.0, bucket + 1))  # widen the rollout: same bytes, new custom
    result = check(config)
    assert result.available is not None and result.available.version == Version("1.2.0")


def test_rollout_fraction_is_roughly_right() -> None:
    inside = sum(rollout_bucket(f"{i:032x}", Version("2.0.0")) < 25 for i in range(4000))
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
    with pytest.raises(ConflictError, match="different bytes"):
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


def test_a_shipped_rotated_root_bootstraps_fresh_installs_and_revokes_the_retired_key(
        feed: Feed, data_dir: Path, tmp_path: Path, server: LoopbackServer) -> None:
    """A build that ships root v2 works against a feed whose history starts at root 1, and a fresh
    install of it refuses a full, validly signed feed made with the retired key."""
    feed.publish("1.1.0")
    new = generate(tmp_path / "new.key")
    assert run_cli("publish", "--feed", str(feed.root), "--key", str(feed.key.private_path),
                   "--rotate-root", str(new.private_path)).returncode == 0
    feed.publish("1.2.0", key=new.private_path)
    shipped = tmp_path / "root.json"
    exported = run_cli("publish", "--export-root", str(shipped), "--feed", str(feed.root), "--json")
    assert json.loads(exported.stdout)["version"] == 2, exported.stderr
    base = ["--registry", feed.url, "--trusted-root", str(shipped), "--json"]
    fresh = run_cli("update", "--data-dir", str(data_dir), *base)
    assert json.loads(fresh.stdout)["version"] == "1.2.0", fresh.stderr
    # Whoever kept the retired key builds a complete feed of their own, with their own root v1.
    evil = FeedRepository(tmp_path / "evil")
    evil.publish(feed.runtime("9.0.0"), load_signer(feed.key.private_path))
    server.serve_directory("/evil/", tmp_path / "evil")
    attacked = run_cli("update", "--data-dir", str(tmp_path / "victim"), "--registry", f"{server.url}/evil",
                       "--trusted-root", str(shipped), "--json")
    assert attacked.returncode == 1 and json.loads(attacked.stdout)["outcome"] == "failed", attacked.stdout
    assert not (tmp_path / "victim" / "versions" / "9.0.0").exists()
    # The pinned-key path (a feed's first root only) would have accepted it: that is why apps ship roots.
    pinned = run_cli("check", "--data-dir", str(tmp_path / "pinned"), "--registry", f"{server.url}/evil",
                     "--public-key", feed.key.public, "--json")
    assert json.loads(pinned.stdout)["available"] == "9.0.0"


def test_cached_metadata_is_keyed_by_the_trust_anchor(feed: Feed, data_dir: Path, tmp_path: Path) -> None:
    feed.publish("1.1.0")
    shipped = tmp_path / "root.json"
    run_cli("publish", "--export-root", str(shipped), "--feed", str(feed.root))
    assert run_cli("check", "--data-dir", str(data_dir), "--registry", feed.url, "--trusted-root",
                   str(shipped)).returncode == 0
    assert run_cli("check", "--data-dir", str(data_dir), "--registry", feed.url, "--public-key",
                   feed.key.public).returncode == 0
    caches = sorted(p.name for p in (data_dir / "cache" / "tuf").iterdir())
    assert len(caches) == 2 and caches[0].split("-")[0] == caches[1].split("-")[0], caches


def test_the_shipped_root_is_a_valid_feed_root() -> None:
    from tuf.api.metadata import Metadata, Root

    from desktop.core.paths import resources_dir

    md = Metadata[Root].from_bytes((resources_dir() / "root.json").read_bytes())
    md.verify_delegate(Root.type, md)  # self-signed up to its threshold
    assert md.signed.consistent_snapshot


def test_status_of_a_feed_warns_before_expiry(feed: Feed) -> None:
    feed.publish("1.1.0")
    status = run_cli("status", "--feed", str(feed.root), "--json")
    obj = json.loads(status.stdout)
    assert status.returncode == 0, status.stderr
    assert {e["role"] for e in obj["expiry"]} == {"root", "targets", "snapshot", "timestamp"}
    assert [r["version"] for r in obj["releases"]] == ["1.1.0"]
    assert obj["warnings"] == []


def test_publish_without_a_key_never_invents_one(feed: Feed, tmp_path: Path) -> None:
    src = feed.runtime("1.5.0")
    result = run_cli("publish", str(src), "--feed", str(tmp_path / "new-feed"),
                     env={"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")})
    assert result.returncode == 1 and "key" in result.stderr
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.key"))
    assert not (tmp_path / "new-feed" / "metadata").exists()
