"""Checking and staging from a real npm-protocol registry on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from desktop.core.badlist import BadVersions
from desktop.core.config import AppConfig
from desktop.core.errors import RegistryError
from desktop.core.failures import FailureMemory
from desktop.core.launching import staged_problem
from desktop.core.pointer import Pointer, read_pointer, write_pointer
from desktop.core.registry.npm import ACCEPT
from desktop.core.results import Progress
from desktop.core.results import UpdateOutcome as StageOutcome
from tests.integration.conftest import PACKAGE, run_cli
from tests.support.server import LoopbackServer
from tests.support.shells import check, update


def verify_staged(config: AppConfig, version: Version) -> bool:
    return staged_problem(config, version, full=True) is None

Publish = Callable[..., Path]
Config = Callable[..., AppConfig]


def tarball_requests(server: LoopbackServer) -> int:
    return len([r for r in server.requests if r.path.endswith((".tgz", ".zip", ".7z")) and r.method == "GET"])


def assert_clean(config: AppConfig) -> None:
    """No partial and no extraction leftovers in versions/."""
    versions = config.data.versions_dir
    leftovers = [p.name for p in versions.iterdir() if p.name.endswith(".partial") or p.name.startswith(".")] \
        if versions.exists() else []
    assert leftovers == []


def test_stages_newer_version_and_points_at_it(server: LoopbackServer, publish: Publish,
                                               npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    progress: list[Progress] = []
    result = update(config, progress=progress.append)
    assert result.outcome is StageOutcome.STAGED and result.version == Version("1.1.0")
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0") and not pointer.known_good
    assert verify_staged(config, Version("1.1.0"))
    assert (config.data.version_dir(Version("1.1.0")) / "textstats").is_dir(), "native dep copied in"
    phases = {p.phase.value for p in progress}
    assert {"download", "extract", "verify"} <= phases
    downloads = [p for p in progress if p.phase.value == "download"]
    assert downloads[-1].done == downloads[-1].total, "download progress reaches the total"
    assert_clean(config)
    assert list(config.data.downloads_dir.iterdir()) == []
    assert (config.data.record_file(Version("1.1.0"))).is_file(), "the staging record is kept outside versions/"
    sent = [r for r in server.requests if r.path == f"/{PACKAGE}"]
    assert sent and sent[0].headers.get("accept") == ACCEPT


def test_up_to_date_check_is_one_304_round_trip(server: LoopbackServer, publish: Publish,
                                                npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    assert update(config).outcome is StageOutcome.STAGED
    server.clear_requests()
    result = update(config)
    assert result.outcome is StageOutcome.UP_TO_DATE
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request.status == 304 and request.bytes_sent == 0
    assert request.request_bytes + request.response_header_bytes <= 2048


def test_never_downgrades(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("1.2.0")
    config = npm_config()
    assert update(config).outcome is StageOutcome.STAGED
    publish("1.1.0")  # the dist-tag moves back
    server.clear_requests()
    result = update(config)
    assert result.outcome is StageOutcome.UP_TO_DATE
    assert tarball_requests(server) == 0
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.2.0")


def test_older_than_bundled_is_not_staged(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("0.9.0")
    config = npm_config()
    assert update(config).outcome is StageOutcome.UP_TO_DATE
    assert read_pointer(config.data.pointer_file) is None


def test_bad_version_is_skipped_and_newer_one_staged(server: LoopbackServer, publish: Publish,
                                                     npm_config: Config) -> None:
    config = npm_config()
    BadVersions(config.data.bad_file).mark(Version("1.1.0"), "exit code 17", 17)
    publish("1.1.0")
    result = update(config)
    assert result.outcome is StageOutcome.BAD_VERSION and result.version == Version("1.1.0")
    assert tarball_requests(server) == 0
    publish("1.2.0")
    assert update(config).outcome is StageOutcome.STAGED
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.2.0")


def test_unparsable_dist_tag_is_ignored(server: LoopbackServer, npm_config: Config, build_release: Publish) -> None:
    server.publish_npm_package(PACKAGE, "1.1.0", build_release("1.1.0"))
    doc = server.npm_document(PACKAGE)
    doc["dist-tags"]["latest"] = "not-a-version"
    server.set_npm_document(PACKAGE, doc)
    result = update(npm_config())
    assert result.outcome is StageOutcome.UP_TO_DATE


@pytest.mark.parametrize("fault,params,message", [
    ("status", {"code": 500}, "HTTP 500"),
    ("status", {"code": 404}, "HTTP 404"),
    ("garbage", {"size": 300}, "not valid JSON"),
    ("stall", {"seconds": 5}, "timed out"),
])
def test_broken_metadata_is_transient_and_changes_nothing(
        server: LoopbackServer, publish: Publish, npm_config: Config, fault: str,
        params: dict[str, int], message: str) -> None:
    publish("1.1.0")
    config = npm_config()
    config = config.with_overrides(net=type(config.net)(read_timeout=1.0, connect_timeout=1.0))
    server.fault(f"/{PACKAGE}", fault, **params)
    result = update(config)
    assert result.outcome is StageOutcome.FAILED
    assert message in str(result.error)
    assert read_pointer(config.data.pointer_file) is None
    assert tarball_requests(server) == 0
    memory = FailureMemory(config.data.failures_file)
    transient = memory.transient()
    assert transient is not None and transient.count == 1 and memory.pinned() == {}
    server.clear_faults()
    assert update(config).outcome is StageOutcome.STAGED
    assert memory.transient() is None


def test_metadata_over_the_cap_is_refused(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    config = config.with_overrides(net=type(config.net)(max_document_bytes=200))
    result = update(config)
    assert result.outcome is StageOutcome.FAILED and "larger than" in str(result.error)


def test_document_without_versions_is_refused(server: LoopbackServer, npm_config: Config) -> None:
    server.set_npm_document(PACKAGE, {"name": PACKAGE, "dist-tags": {"latest": "1.1.0"}})
    with pytest.raises(RegistryError):
        check(npm_config())


def test_digest_mismatches_are_transient_and_never_pin_the_release(
        server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    archive = publish("1.1.0")
    tarball = f"/{PACKAGE}/-/{PACKAGE}-1.1.0.tgz"
    server.fault(tarball, "corrupt", offset=100)
    config = npm_config()
    for _ in range(3):
        report = update(config)
        assert report.outcome is StageOutcome.FAILED and "digest" in str(report.error)
        assert not report.pinned and report.failure is not None and report.failure.value == "transient"
    assert tarball_requests(server) == 3
    assert FailureMemory(config.data.failures_file).pinned() == {}
    assert read_pointer(config.data.pointer_file) is None
    assert_clean(config)
    assert list(config.data.downloads_dir.iterdir()) == [], "bytes that do not match are not kept"
    # The fault goes away: the genuine release stages, no `bad clear` needed.
    server.clear_faults()
    assert update(config).outcome is StageOutcome.STAGED
    assert archive.exists()


def test_truncated_download_is_transient_then_resumes(server: LoopbackServer, publish: Publish,
                                                      npm_config: Config) -> None:
    archive = publish("1.1.0")
    tarball = f"/{PACKAGE}/-/{PACKAGE}-1.1.0.tgz"
    size = archive.stat().st_size
    server.fault(tarball, "truncate", at=size // 2, times=1)
    config = npm_config()
    first = update(config)
    assert first.outcome is StageOutcome.FAILED and "interrupted" in str(first.error) or \
        "ended after" in str(first.error)
    assert read_pointer(config.data.pointer_file) is None
    assert FailureMemory(config.data.failures_file).pinned() == {}
    server.clear_requests()
    second = update(config)
    assert second.outcome is StageOutcome.STAGED
    ranged = [r for r in server.requests if r.path == tarball]
    assert ranged and ranged[0].status == 206, "the second attempt resumes with Range"
    assert ranged[0].bytes_sent < size


def test_manifest_version_mismatch_is_pinned(server: LoopbackServer, publish: Publish,
                                             npm_config: Config) -> None:
    publish("1.1.0", manifest_version="1.1.5")
    config = npm_config()
    result = update(config)
    assert result.outcome is StageOutcome.FAILED and "expected 1.1.0" in str(result.error)
    server.clear_requests()
    assert update(config).outcome is StageOutcome.UP_TO_DATE
    assert tarball_requests(server) == 0
    assert_clean(config)


def test_host_gate_refuses_incompatible_release(server: LoopbackServer, publish: Publish,
                                                npm_config: Config) -> None:
    publish("1.1.0", requires_shell=">=99")
    config = npm_config()
    result = update(config)
    assert result.outcome is StageOutcome.FAILED and "requires shell" in str(result.error)
    assert read_pointer(config.data.pointer_file) is None


def test_missing_entry_is_refused(server: LoopbackServer, publish: Publish, npm_config: Config,
                                  build_release: Publish, tmp_path: Path) -> None:
    from desktop.core.pack import pack_directory
    from desktop.devtools import derive_runtime
    src = derive_runtime(tmp_path / "noentry", "1.1.0")
    (src / "app" / "main.py").unlink()
    out = tmp_path / "noentry.tgz"
    pack_directory(src, out)
    server.publish_npm_package(PACKAGE, "1.1.0", out)
    result = update(npm_config())
    assert result.outcome is StageOutcome.FAILED and "entry point" in str(result.error)


@pytest.mark.parametrize("fmt", ["zip", "7z"])
def test_other_archive_formats_stage(server: LoopbackServer, publish: Publish, npm_config: Config,
                                     fmt: str) -> None:
    publish("1.1.0", fmt=fmt)
    config = npm_config()
    assert update(config).outcome is StageOutcome.STAGED
    assert verify_staged(config, Version("1.1.0"))


def test_orphaned_complete_version_is_adopted_without_download(
        server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    assert update(config).outcome is StageOutcome.STAGED
    # Simulate a crash between the rename and the pointer write.
    write_pointer(config.data.pointer_file, None)
    server.clear_requests()
    result = update(config)
    assert result.outcome is StageOutcome.ALREADY_STAGED and result.bytes_downloaded < 2048
    assert tarball_requests(server) == 0
    pointer = read_pointer(config.data.pointer_file)
    assert pointer is not None and pointer.version == Version("1.1.0")


def test_broken_staged_version_is_restaged(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    assert update(config).outcome is StageOutcome.STAGED
    vdir = config.data.version_dir(Version("1.1.0"))
    shutil.rmtree(vdir / "textstats")
    write_pointer(config.data.pointer_file, None)
    server.clear_requests()
    result = update(config)
    assert result.outcome is StageOutcome.STAGED and result.bytes_downloaded > 0
    assert tarball_requests(server) == 1
    assert verify_staged(config, Version("1.1.0"))


def test_corrupt_pointer_does_not_break_update(server: LoopbackServer, publish: Publish,
                                               npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    config.data.ensure()
    config.data.pointer_file.write_bytes(b'{"version": "1.0')
    config.data.bad_file.write_bytes(b"\x00garbage")
    assert update(config).outcome is StageOutcome.STAGED


def test_not_enough_disk_space_fails_cleanly(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    config = config.with_overrides(net=type(config.net)(min_free_bytes=1 << 60))
    result = update(config)
    assert result.outcome is StageOutcome.FAILED and "disk space" in str(result.error)
    assert tarball_requests(server) == 0
    assert read_pointer(config.data.pointer_file) is None


def test_pointer_stays_when_stage_fails_on_top_of_staged_version(
        server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    assert update(config).outcome is StageOutcome.STAGED
    before = config.data.pointer_file.read_bytes()
    publish("1.2.0", manifest_version="9.9.9")
    assert update(config).outcome is StageOutcome.FAILED
    assert config.data.pointer_file.read_bytes() == before
    assert verify_staged(config, Version("1.1.0"))


def test_cli_update_and_status_json(server: LoopbackServer, publish: Publish, data_dir: Path) -> None:
    publish("1.1.0")
    base = ["--data-dir", str(data_dir), "--registry", f"{server.url}/{PACKAGE}", "--registry-kind", "npm"]
    checked = run_cli("check", *base, "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["available"] == "1.1.0"
    updated = run_cli("update", *base, "--json")
    assert updated.returncode == 0, updated.stderr
    obj = json.loads(updated.stdout)
    assert (obj["outcome"], obj["version"], obj["delta"]) == ("staged", "1.1.0", False)
    assert obj["bytes_downloaded"] > 0
    assert "download" in updated.stderr
    status = run_cli("status", "--json", *base)
    assert status.returncode == 0
    obj = json.loads(status.stdout)
    assert obj["version"] == "1.1.0" and obj["source"] == "staged"
    again = run_cli("update", *base, "--json")
    assert json.loads(again.stdout)["outcome"] == "up-to-date"


def test_cli_failures_are_one_line_exit_1(server: LoopbackServer, data_dir: Path) -> None:
    server.fault(f"/{PACKAGE}", "status", code=500)
    base = ["--data-dir", str(data_dir), "--registry", f"{server.url}/{PACKAGE}", "--registry-kind", "npm"]
    result = run_cli("update", *base)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "HTTP 500" in lines[0] and "Traceback" not in result.stderr
    refused = run_cli("check", "--data-dir", str(data_dir), "--registry", "http://example.com/x",
                      "--registry-kind", "npm")
    assert refused.returncode == 2 and "only https" in refused.stderr, "a refused URL is bad usage"
    usage = run_cli("frobnicate")
    assert usage.returncode == 2


def test_cli_bad_list_and_clear(data_dir: Path) -> None:
    BadVersions(data_dir / "bad-versions.json").mark(Version("1.3.0"), "exit code 1", 1)
    listed = run_cli("bad", "list", "--data-dir", str(data_dir), "--json")
    assert set(json.loads(listed.stdout)["bad"]) == {"1.3.0"}
    cleared = run_cli("bad", "clear", "1.3.0", "--data-dir", str(data_dir), "--json")
    assert json.loads(cleared.stdout)["cleared"] == ["1.3.0"]
    assert BadVersions(data_dir / "bad-versions.json").load().entries == {}


def test_gc_keeps_pointer_and_last_known_good(server: LoopbackServer, publish: Publish,
                                              npm_config: Config) -> None:
    config = npm_config()
    for version in ("1.1.0", "1.2.0", "1.3.0", "1.4.0"):
        publish(version)
        assert update(config).outcome is StageOutcome.STAGED
    # Staging already collected garbage: the pointer's version and one other are left.
    assert sorted(p.name for p in config.data.versions_dir.iterdir()) == ["1.3.0", "1.4.0"]
    for old in ("1.1.0", "1.2.0"):
        shutil.copytree(config.data.version_dir(Version("1.4.0")), config.data.versions_dir / old)
    write_pointer(config.data.pointer_file,
                  Pointer(Version("1.4.0"), known_good=False, last_known_good=Version("1.1.0")))
    (config.data.versions_dir / "1.5.0.partial").mkdir()
    from desktop.core.shell import Shell
    result = Shell(config).collect_garbage()
    remaining = sorted(p.name for p in config.data.versions_dir.iterdir())
    assert remaining == ["1.1.0", "1.3.0", "1.4.0"]
    assert "1.2.0" in result.removed and "1.5.0.partial" in result.removed
    assert os.path.exists(config.data.pointer_file)


def test_extraction_overlaps_the_download(server: LoopbackServer, publish: Publish, npm_config: Config) -> None:
    import threading
    import time

    publish("1.1.0", extra_files={f"lib/f{i}.txt": os.urandom(20_000) for i in range(150)})
    server.fault(f"/{PACKAGE}/-/{PACKAGE}-1.1.0.tgz", "slow", chunk=64 * 1024, delay=0.05)
    config = npm_config()
    seen: list[tuple[bool, bool]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            downloading = any(config.data.downloads_dir.glob("*.part")) if config.data.downloads_dir.exists() \
                else False
            extracting = any(p.name.startswith(".1.1.0.partial") for p in config.data.versions_dir.iterdir()) \
                if config.data.versions_dir.exists() else False
            seen.append((downloading, extracting))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert update(config).outcome is StageOutcome.STAGED
    finally:
        done.set()
        watcher.join()
    assert (True, True) in seen, "files were being extracted while the archive was still arriving"
    assert verify_staged(config, Version("1.1.0"))


def test_a_native_dependency_this_shell_lacks_is_pinned_for_this_shell_only(
        server: LoopbackServer, npm_config: Config, build_release: Publish) -> None:
    import json as _json

    from desktop.core.pack import pack_directory
    from desktop.devtools import derive_runtime

    src = derive_runtime(Path(build_release("1.1.0")).parent / "needs-gpu", "1.1.0")
    manifest = _json.loads((src / "runtime.json").read_text())
    manifest["native"] = ["textstats", "gpuhelper"]
    (src / "runtime.json").write_text(_json.dumps(manifest))
    archive = src.parent / "needs-gpu.tgz"
    pack_directory(src, archive)
    server.publish_npm_package(PACKAGE, "1.1.0", archive)
    config = npm_config()
    report = update(config)
    assert report.outcome is StageOutcome.FAILED and report.pinned and "does not bundle" in str(report.error)
    pinned = FailureMemory(config.data.failures_file).pinned()[Version("1.1.0")]
    assert pinned.shell is not None, "a newer shell, which may bundle it, tries the release again"


def _slow_release(server: LoopbackServer, publish: Publish) -> None:
    """A release whose files are extracted while its archive is still arriving."""
    files = {f"lib/part-{i}.bin": os.urandom(16 * 1024) for i in range(64)}
    publish("1.1.0", extra_files=files)
    server.fault(f"/{PACKAGE}/-/{PACKAGE}-1.1.0.tgz", "slow", chunk=32 * 1024, delay=0.02)


def test_progress_in_a_log_names_each_phase_once(server: LoopbackServer, publish: Publish, data_dir: Path) -> None:
    _slow_release(server, publish)
    result = run_cli("update", "--data-dir", str(data_dir), "--registry", f"{server.url}/{PACKAGE}",
                     "--registry-kind", "npm", env={"DESKTOP_NO_WEBVIEW": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.endswith("...")] == ["download...", "extract...", "verify..."]
    assert len([line for line in lines if line.startswith("download ")]) <= 11  # a line per tenth
    assert len(lines) <= 30, result.stderr


def test_progress_on_a_terminal_is_one_line_rewritten_in_place(server: LoopbackServer, publish: Publish,
                                                               data_dir: Path) -> None:
    import pty
    import subprocess
    import sys

    _slow_release(server, publish)
    leader, follower = pty.openpty()
    with subprocess.Popen([sys.executable, "-m", "desktop", "update", "--data-dir", str(data_dir), "--registry",
                           f"{server.url}/{PACKAGE}", "--registry-kind", "npm"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower) as proc:
        os.close(follower)
        received = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            received += chunk
        assert proc.wait(timeout=120) == 0
    os.close(leader)
    text = received.decode("utf-8", "replace")
    assert text.count("\r") > 3, "progress is rewritten in place"
    finished = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    # The download and extraction line, the verify line, and the outcome.
    assert len(finished) <= 3, finished
    last_bar = finished[0].rsplit("\r", 1)[-1]
    assert "download [" in last_bar and "100%" in last_bar and "extract " in last_bar, last_bar
