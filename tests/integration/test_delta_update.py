"""Delta updates end to end: a real feed on 127.0.0.1 publishes deltas, the client rebuilds the new
version from the one it has, and falls back to the full archive whenever the delta cannot be used."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.config import AppConfig
from desktop.core.delta import scan_manifest
from desktop.core.errors import ManifestError
from desktop.core.failures import FailureMemory
from desktop.core.launching import staged_problem
from desktop.core.pointer import read_pointer
from desktop.core.results import UpdateOutcome
from tests.support.feed import Feed
from tests.support.server import LoopbackServer
from tests.support.shells import update

PAYLOAD = random.Random(20261202).randbytes(3 * 1024 * 1024)  # incompressible: the full archive is big


def _files(version: str, *, extra: int = 0) -> dict[str, bytes]:
    """A release: the shared payload, a file that changes every release, `extra` new small files."""
    files: dict[str, bytes] = {"lib/payload.bin": PAYLOAD, "lib/changes.txt": f"release {version}\n".encode() * 50}
    for i in range(extra):
        files[f"lib/new/{i}.txt"] = f"{version} {i}\n".encode() * 20
    return files


@pytest.fixture
def feed(server: LoopbackServer, tmp_path: Path) -> Iterator[Feed]:
    yield Feed(tmp_path / "feed", server, tmp_path / "work")


def _full_archive(feed: Feed, version: str) -> Path:
    return next(p for p in (feed.root / "targets").iterdir()
                if f"-{version}." in p.name and not p.name.endswith(".delta"))


def _delta_file(feed: Feed, version: str, base: str) -> Path:
    return next(p for p in (feed.root / "targets").iterdir() if p.name.endswith(f"{version}.tar.gz.from-{base}.delta")
                or (f"{version}" in p.name and p.name.endswith(f".from-{base}.delta")))


def _published_tree(feed: Feed, version: str) -> Path:
    return next(p for p in feed.work.iterdir() if p.name.startswith(f"rt-{version}-"))


def _staged_like_published(config: AppConfig, feed: Feed, version: str) -> None:
    """The staged tree is the release as published (plus the native deps the stager adds)."""
    assert staged_problem(config, Version(version), full=True) is None
    recorded = json.loads(config.data.runtimes.files_manifest(Version(version)).read_bytes())
    published = scan_manifest(_published_tree(feed, version))
    assert recorded == json.loads(published.to_bytes())


def _staged_then_published(feed: Feed, data_dir: Path, *, extra: int = 0) -> AppConfig:
    """2.0.0 staged from the feed, then 2.1.0 (with a delta from 2.0.0) published."""
    feed.publish("2.0.0", extra_files=_files("2.0.0"))
    config = feed.config(data_dir)
    first = update(config)
    assert first.outcome is UpdateOutcome.STAGED and not first.delta
    feed.publish("2.1.0", extra_files=_files("2.1.0", extra=extra))
    return config


def test_an_update_rebuilds_the_new_version_from_a_delta(feed: Feed, data_dir: Path) -> None:
    config = _staged_then_published(feed, data_dir, extra=5)
    delta = _delta_file(feed, "2.1.0", "2.0.0")
    full = _full_archive(feed, "2.1.0")
    assert delta.stat().st_size < full.stat().st_size * 0.1

    report = update(config)

    assert report.outcome is UpdateOutcome.STAGED and report.delta
    # everything received, the signed metadata included
    assert delta.stat().st_size <= report.bytes_downloaded < full.stat().st_size * 0.1
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("2.1.0")
    _staged_like_published(config, feed, "2.1.0")
    assert list(config.data.downloads_dir.iterdir()) == []


def test_the_cli_reports_a_delta_and_the_rebuilt_runtime_starts(feed: Feed, data_dir: Path) -> None:
    _staged_then_published(feed, data_dir)
    args = ["--data-dir", str(data_dir), "--registry", feed.url, "--registry-kind", "feed",
            "--public-key", feed.key.public]
    done = subprocess.run([sys.executable, "-m", "desktop", "update", *args, "--json"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["outcome"] == "staged" and out["delta"] is True and out["version"] == "2.1.0"
    launched = subprocess.run([sys.executable, "-m", "desktop", "launch", "--until-ready", "--json",
                               "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["version"] == "2.1.0"

    # The publisher says which deltas it built with the release, and how big they are.
    src = feed.runtime("2.2.0", extra_files=_files("2.2.0"))
    published = subprocess.run([sys.executable, "-m", "desktop", "publish", str(src), "--feed", str(feed.root),
                                "--key", str(feed.key.private_path), "--json"], capture_output=True, text=True,
                               timeout=120, check=False)
    assert published.returncode == 0, published.stderr
    release = json.loads(published.stdout)
    assert sorted(release["deltas"]) == ["2.0.0", "2.1.0"]
    assert all(size < release["length"] / 10 for size in release["deltas"].values())


def test_a_base_changed_on_disk_means_the_full_archive_and_nothing_pinned(
        feed: Feed, data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _staged_then_published(feed, data_dir)
    # A file the launch record does not cover but the delta copies from: only the delta notices.
    payload = config.data.version_dir(Version("2.0.0")) / "lib" / "payload.bin"
    with open(payload, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 16)

    report = update(config)

    assert report.outcome is UpdateOutcome.STAGED and not report.delta
    assert "the delta from 2.0.0 did not rebuild 2.1.0" in caplog.text  # tried, refused, then the full archive
    assert report.bytes_downloaded >= _full_archive(feed, "2.1.0").stat().st_size
    _staged_like_published(config, feed, "2.1.0")
    assert FailureMemory(config.data.failures_file).pinned() == {}


def test_a_tampered_delta_is_refused_and_the_full_archive_used(
        feed: Feed, data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _staged_then_published(feed, data_dir)
    delta = _delta_file(feed, "2.1.0", "2.0.0")
    data = bytearray(delta.read_bytes())
    data[len(data) // 2] ^= 0xFF
    delta.write_bytes(bytes(data))

    report = update(config)

    assert report.outcome is UpdateOutcome.STAGED and not report.delta
    assert "the delta from 2.0.0 did not rebuild 2.1.0" in caplog.text
    _staged_like_published(config, feed, "2.1.0")
    assert FailureMemory(config.data.failures_file).pinned() == {}


def test_without_the_base_version_the_full_archive_is_downloaded(feed: Feed, data_dir: Path) -> None:
    feed.publish("2.0.0", extra_files=_files("2.0.0"))
    feed.publish("2.1.0", extra_files=_files("2.1.0"))
    config = feed.config(data_dir)

    report = update(config)

    assert report.outcome is UpdateOutcome.STAGED and not report.delta
    assert report.bytes_downloaded >= _full_archive(feed, "2.1.0").stat().st_size


def test_the_runtime_shipped_with_the_app_is_a_delta_base(feed: Feed, data_dir: Path, tmp_path: Path) -> None:
    feed.publish("2.0.0", extra_files=_files("2.0.0"))
    feed.publish("2.1.0", extra_files=_files("2.1.0"))
    config = feed.config(data_dir)
    resources = tmp_path / "resources"
    shutil.copytree(config.resources, resources, ignore=shutil.ignore_patterns("runtime"))
    shutil.copytree(_published_tree(feed, "2.0.0"), resources / "runtime")
    config = config.with_overrides(resources=resources)

    report = update(config)

    assert report.outcome is UpdateOutcome.STAGED and report.delta
    assert report.bytes_downloaded < _full_archive(feed, "2.1.0").stat().st_size * 0.1
    _staged_like_published(config, feed, "2.1.0")


def test_an_archive_that_differs_from_its_signed_file_manifest_is_refused(
        feed: Feed, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from desktop.core.publisher import repository

    other = feed.runtime("2.1.0", extra_files=_files("9.9.9"))
    real_scan = scan_manifest
    monkeypatch.setattr(repository, "scan_manifest", lambda tree, **kw: real_scan(other, **kw))
    feed.publish("2.1.0", extra_files=_files("2.1.0"))
    monkeypatch.undo()
    config = feed.config(data_dir)

    report = update(config)

    assert report.outcome is UpdateOutcome.FAILED and isinstance(report.error, ManifestError)
    assert "does not match its signed file manifest" in str(report.error)

    assert read_pointer(config.data.pointer_file) is None
    assert not config.data.version_dir(Version("2.1.0")).exists()
    assert [p.name for p in config.data.versions_dir.iterdir() if ".partial" in p.name] == []


@pytest.mark.parametrize("step", ("delta-downloaded", "mid-extract", "partial-complete", "after-rename"))
def test_kill_9_while_rebuilding_from_a_delta(feed: Feed, data_dir: Path, step: str) -> None:
    config = _staged_then_published(feed, data_dir, extra=20)
    args = ["--data-dir", str(data_dir), "--registry", feed.url, "--registry-kind", "feed",
            "--public-key", feed.key.public, "--json"]
    killed = subprocess.run([sys.executable, "-m", "desktop", "update", *args], capture_output=True, text=True,
                            timeout=120, check=False, env={**os.environ, "DESKTOP_FAULT": step})
    assert killed.returncode == -signal.SIGKILL, f"the fault point {step} was not reached: {killed.stderr}"
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("2.0.0")
    assert staged_problem(config, Version("2.0.0"), full=True) is None

    report = update(config)

    if step == "after-rename":  # the complete version is adopted, nothing downloaded again
        assert report.outcome is UpdateOutcome.ALREADY_STAGED
    else:
        assert report.outcome is UpdateOutcome.STAGED and report.delta
    _staged_like_published(config, feed, "2.1.0")
    leftovers = [p.name for p in config.data.versions_dir.iterdir() if ".partial" in p.name]
    assert leftovers == [] and list(config.data.downloads_dir.iterdir()) == []
