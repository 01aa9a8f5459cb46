"""The publisher checks before it writes: keys, thresholds, staging, the switch, expiry, permissions.

Feeds are real directories served by a real HTTP server on 127.0.0.1 and read by the real
`tuf.ngclient` (as an installed app keeps its cache); publishers that must die are real
subprocesses killed with SIGKILL; "another user" is uid 65534 through `setpriv`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from desktop.core.errors import ConflictError, UsageError
from desktop.core.keys import generate, load_signer, parse_public_key
from desktop.core.publisher import (
    ExpiredRoleError,
    FeedBusyError,
    FeedCheckError,
    FeedPublisher,
    FeedStateError,
    FeedWriteError,
    KeyNotAuthorisedError,
    NoSigningKeyError,
    ThresholdError,
    expiry_report,
    export_root,
)
from desktop.core.publisher.expiry import now_utc
from desktop.devtools import derive_runtime
from tests.support.server import LoopbackServer

REPO_ROOT = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


# -- helpers ------------------------------------------------------------------------------------
class Keys:
    """Signing keys made with keygen's code, loaded on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self.made:
            self.made[name] = generate(self.directory / f"{name}.key").private_path
        return self.made[name]

    def __call__(self, *names: str) -> list[CryptoSigner]:
        return [load_signer(self.path(name)) for name in names]

    def keyid(self, name: str) -> str:
        return str(self(name)[0].public_key.keyid)


class Runtimes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self, version: str, **kwargs: object) -> Path:
        self.count += 1
        return derive_runtime(self.directory / f"rt-{version}-{self.count}", version, **kwargs)


class Client:
    """A tuf.ngclient client of a served feed that keeps its cache between reads, as an app does."""

    def __init__(self, url: str, home: Path, bootstrap: bytes) -> None:
        self.url = url.rstrip("/")
        self.home = home
        self.bootstrap = bootstrap
        home.mkdir(parents=True, exist_ok=True)

    def releases(self) -> dict[str, str]:
        """Every published target's name -> version, as the client verifies them."""
        updater = Updater(str(self.home), f"{self.url}/metadata/", target_dir=str(self.home / "targets"),
                          target_base_url=f"{self.url}/targets/", bootstrap=self.bootstrap)
        updater.refresh()
        index = updater.get_targetinfo("index.json")
        assert index is not None
        names = json.loads(Path(updater.download_target(index)).read_bytes())["releases"]
        found: dict[str, str] = {}
        for name in names:
            info = updater.get_targetinfo(name)
            assert info is not None
            found[name] = str(info.custom["version"])
        return found

    def versions(self) -> set[str]:
        return set(self.releases().values())


def served_tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file a web server would serve (dot-entries skipped), with its mode and bytes."""
    found: dict[str, tuple[int, bytes]] = {}
    for folder in ("metadata", "targets"):
        directory = root / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if not path.name.startswith("."):
                found[f"{folder}/{path.name}"] = (stat.S_IMODE(path.stat().st_mode), path.read_bytes())
    return found


def dot_entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.name.startswith(".")}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def runtime(tmp_path: Path) -> Runtimes:
    return Runtimes(tmp_path / "src")


@pytest.fixture
def served(server: LoopbackServer, tmp_path: Path) -> tuple[Path, str]:
    """A feed directory and the URL it is served at."""
    feed = tmp_path / "feed"
    server.serve_directory("/feed/", feed)
    return feed, f"{server.url}/feed"


def first_root(feed: Path) -> bytes:
    return (feed / "metadata" / "1.root.json").read_bytes()


# -- finding 2: a key the feed does not trust is refused, the feed stays as it was -----------------
def test_a_key_not_trusted_for_the_role_is_refused_and_the_feed_is_unchanged(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    client = Client(url, tmp_path / "client", first_root(feed))
    assert client.versions() == {"1.1.0"}
    before = served_tree(feed)
    wrong = keys.keyid("wrong")[:16]
    publisher = FeedPublisher(feed)

    with pytest.raises(KeyNotAuthorisedError) as refused:
        publisher.publish(runtime("1.2.0"), keys("wrong"))
    message = str(refused.value)
    assert "\n" not in message and wrong in message and "targets role in root v1" in message
    assert keys.keyid("a")[:16] in message, "names the key the role trusts"

    with pytest.raises(KeyNotAuthorisedError, match=f"key {wrong} is not authorised for the snapshot role"):
        publisher.refresh(keys("wrong"))
    with pytest.raises(KeyNotAuthorisedError, match=f"key {wrong} is not authorised for the root role"):
        publisher.rotate_root(keys("wrong"), keys("new"))
    # A trusted key next to a stranger is still a mistake worth stopping for.
    with pytest.raises(KeyNotAuthorisedError, match=wrong):
        publisher.refresh(keys("a", "wrong"))

    assert served_tree(feed) == before
    assert dot_entries(feed) == {".publish.lock"}, "no staging directory is left behind"
    assert client.versions() == {"1.1.0"}


def test_no_key_is_refused_and_none_is_ever_generated(keys: Keys, runtime: Runtimes, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config_home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    new_feed = tmp_path / "new-feed"
    with pytest.raises(NoSigningKeyError, match="needs a signing key: create one with `desktop keygen"):
        FeedPublisher(new_feed).publish(runtime("1.1.0"), [])
    assert not new_feed.exists()

    feed = tmp_path / "feed"
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    before = served_tree(feed)
    for attempt in (lambda p: p.publish(runtime("1.2.0"), []), lambda p: p.refresh([]),
                    lambda p: p.rotate_root([], keys("b"))):
        with pytest.raises(NoSigningKeyError, match="never generated|root key"):
            attempt(FeedPublisher(feed))
    assert served_tree(feed) == before
    assert not config_home.exists() and not (tmp_path / "home").exists(), "no key file appeared anywhere"


# -- threshold signing, end to end ------------------------------------------------------------------
def test_two_of_three_threshold_from_creation_through_rotation(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    publisher = FeedPublisher(feed)
    created = publisher.create(keys("k1", "k2", "k3"), thresholds=2)
    assert created.thresholds == dict.fromkeys(("root", "targets", "snapshot", "timestamp"), 2)
    assert len(created.keyids["targets"]) == 3

    before = served_tree(feed)
    with pytest.raises(ThresholdError, match=r"targets role in root v1 .* needs signatures from 2 .* provide 1"):
        publisher.publish(runtime("1.1.0"), keys("k2"))
    assert served_tree(feed) == before

    publisher.publish(runtime("1.1.0"), keys("k1", "k3"))
    signed = Metadata.from_file(str(feed / "metadata" / "2.targets.json"))
    assert set(signed.signatures) == {keys.keyid("k1"), keys.keyid("k3")}, "every given authorised key signs"
    client = Client(url, tmp_path / "client", first_root(feed))
    assert client.versions() == {"1.1.0"}

    with pytest.raises(ThresholdError, match="root role in root v1"):
        publisher.rotate_root(keys("k1"), keys("n1", "n2"))
    rotated = publisher.rotate_root(keys("k1", "k2"), keys("n1", "n2"), thresholds=2)
    assert rotated.root_version == 2 and rotated.thresholds["root"] == 2
    root2 = Metadata.from_file(str(feed / "metadata" / "2.root.json"))
    assert {keys.keyid(n) for n in ("k1", "k2", "n1", "n2")} <= set(root2.signatures)

    with pytest.raises(KeyNotAuthorisedError):
        publisher.publish(runtime("1.2.0"), keys("k1", "k3"))
    publisher.publish(runtime("1.2.0"), keys("n1", "n2"))
    assert client.versions() == {"1.1.0", "1.2.0"}, "a client that trusted root v1 follows the rotation"
    fresh = Client(url, tmp_path / "fresh", (feed / "metadata" / "2.root.json").read_bytes())
    assert fresh.versions() == {"1.1.0", "1.2.0"}


def test_rotation_double_signs_so_clients_on_the_old_root_accept_the_new_state_before_it(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    publisher = FeedPublisher(feed)
    publisher.publish(runtime("1.1.0"), keys("old"))
    client = Client(url, tmp_path / "client", first_root(feed))
    assert client.versions() == {"1.1.0"}
    rotated = publisher.rotate_root(keys("old"), keys("new"))
    assert rotated.warnings == ()
    timestamp = Metadata.from_file(str(feed / "metadata" / "timestamp.json"))
    assert set(timestamp.signatures) == {keys.keyid("old"), keys.keyid("new")}
    # The instant between the new timestamp and the new root going live, replayed: the
    # client still on root v1 accepts what it reads.
    (feed / "metadata" / "2.root.json").rename(tmp_path / "held-back.root.json")
    assert client.versions() == {"1.1.0"}
    (tmp_path / "held-back.root.json").rename(feed / "metadata" / "2.root.json")
    assert client.versions() == {"1.1.0"}


def test_rotating_an_online_key_without_the_old_one_warns_about_the_switch_instant(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    _split_feed(feed, keys, runtime)
    client = Client(url, tmp_path / "client", first_root(feed))
    assert client.versions() == {"1.1.0"}
    root2 = keys("root2")[0].public_key
    root_only = FeedPublisher(feed).rotate_root(keys("root"), keys("root2"), keys={"root": [root2]})
    assert root_only.resigned == () and root_only.warnings == (), "the online roles still verify under root v2"
    online2 = keys("online2")[0].public_key
    rotated = FeedPublisher(feed).rotate_root(keys("root2"), keys("online2"),
                                              keys={"targets": [online2], "snapshot": [online2],
                                                    "timestamp": [online2]})
    assert rotated.resigned == ("targets", "snapshot", "timestamp")
    assert len(rotated.warnings) == 1
    assert "clients on root v2 may refuse the feed for the instant" in rotated.warnings[0]
    assert client.versions() == {"1.1.0"}
    FeedPublisher(feed).publish(runtime("1.2.0"), keys("online2"))
    assert client.versions() == {"1.1.0", "1.2.0"}


# -- check before writing -----------------------------------------------------------------------------
def test_a_staged_state_that_fails_the_client_check_never_goes_live(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    before = served_tree(feed)

    def corrupt_staged_archive(step: str) -> None:
        if step == "staged":
            staging = next(p for p in feed.iterdir() if p.name.startswith(".staging-"))
            archive = next((staging / "targets").glob("*.tar.gz"))
            data = bytearray(archive.read_bytes())
            data[100] ^= 0xFF
            archive.write_bytes(bytes(data))

    with pytest.raises(FeedCheckError, match="fresh client .* would refuse .* live feed is unchanged"):
        FeedPublisher(feed, checkpoint=corrupt_staged_archive).publish(runtime("1.2.0"), keys("a"))
    assert served_tree(feed) == before
    assert dot_entries(feed) == {".publish.lock"}
    assert Client(url, tmp_path / "client", first_root(feed)).versions() == {"1.1.0"}


def test_a_failure_after_the_check_leaves_the_feed_byte_for_byte_unchanged(
        keys: Keys, runtime: Runtimes, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    before = served_tree(feed)

    def disk_full(step: str) -> None:
        if step == "verified":
            raise OSError(28, "No space left on device")

    for operation in (lambda p: p.publish(runtime("1.2.0"), keys("a")), lambda p: p.refresh(keys("a")),
                      lambda p: p.rotate_root(keys("a"), keys("b"))):
        with pytest.raises(FeedWriteError, match=r"^cannot write the feed .*: No space left on device$"):
            operation(FeedPublisher(feed, checkpoint=disk_full))
        assert served_tree(feed) == before
        assert dot_entries(feed) == {".publish.lock"}


KILL_SCRIPT = """
import os, sys, time
from pathlib import Path
from desktop.core.keys import load_signer
from desktop.core.publisher import FeedPublisher
feed, key, source, stop_at, log = sys.argv[1:6]
calls = []
def checkpoint(step):
    calls.append(step)
    with open(log, "a") as out:
        out.write(step + "\\n")
    if len(calls) - 1 == int(stop_at):
        with open(log + ".stopped.tmp", "w") as out:
            out.write(step)
        os.replace(log + ".stopped.tmp", log + ".stopped")  # never seen half-written
        time.sleep(600)
FeedPublisher(Path(feed), checkpoint=checkpoint).publish(Path(source), [load_signer(Path(key))])
"""


def _publisher_process(tmp_path: Path, feed: Path, key: Path, source: Path, stop_at: int,
                       tag: str) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "kill_publisher.py"
    if not script.exists():
        script.write_text(KILL_SCRIPT)
    log = tmp_path / f"steps-{tag}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(log.with_name(log.name + ".err"), "wb") as errors:
        process = subprocess.Popen([sys.executable, str(script), str(feed), str(key), str(source), str(stop_at),
                                    str(log)], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    return process, log


def _wait_stopped(process: subprocess.Popen[bytes], log: Path) -> str:
    stopped = log.with_name(log.name + ".stopped")
    deadline = time.monotonic() + 60
    while not stopped.exists():
        if process.poll() is not None:
            raise AssertionError(f"publisher exited early: {log.with_name(log.name + '.err').read_text()}")
        assert time.monotonic() < deadline, "the publisher never reached its step"
        time.sleep(0.02)
    return stopped.read_text()


def test_kill_9_at_every_step_leaves_a_feed_clients_read_consistently(
        keys: Keys, runtime: Runtimes, server: LoopbackServer, tmp_path: Path) -> None:
    base = tmp_path / "base"
    key = keys.path("a")
    FeedPublisher(base).publish(runtime("1.1.0"), [load_signer(key)])
    source = runtime("1.2.0")

    # A complete run names the steps.
    dry = tmp_path / "dry"
    shutil.copytree(base, dry)
    process, log = _publisher_process(tmp_path, dry, key, source, 10_000, "dry")
    assert process.wait(timeout=60) == 0
    steps = log.read_text().splitlines()
    replaces = [s for s in steps if s.startswith("replace ")]
    assert steps[:3] == ["locked", "authorised", "staged"] and steps[3] == "verified" and steps[-1] == "committed"
    # the archive, the delta from 1.1.0 and the index, then the metadata
    assert [s.split("/")[0] for s in replaces] == ["replace targets"] * 3 + ["replace metadata"] * 5
    assert any(s.endswith(".from-1.1.0.delta") for s in replaces[:3])
    assert replaces[-1] == "replace metadata/timestamp.json", "timestamp goes live last"
    assert [s.rsplit("/", 1)[1] for s in replaces[3:5]] == ["3.snapshot.json", "3.targets.json"]

    # One killed publisher per step, all paused at once, each with a client that read the feed before.
    runs = []
    for index, step in enumerate(steps):
        copy = tmp_path / f"kill-{index}"
        shutil.copytree(base, copy)
        server.serve_directory(f"/k{index}/", copy)
        cached = Client(f"{server.url}/k{index}", tmp_path / f"cached-{index}", first_root(copy))
        assert cached.versions() == {"1.1.0"}
        process, log = _publisher_process(tmp_path, copy, key, source, index, str(index))
        runs.append((index, step, copy, cached, process, log))
    try:
        for _index, step, _copy, _cached, process, log in runs:
            assert _wait_stopped(process, log) == step
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    finally:
        for *_, process, _log in runs:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
                process.wait(timeout=30)

    timestamp_step = steps.index("replace metadata/timestamp.json")
    first_replace = steps.index(replaces[0])
    for index, step, copy, cached, _process, _log in runs:
        if index <= first_replace:
            assert served_tree(copy) == served_tree(base), f"killed at {step!r}: the feed changed"
        expected = {"1.1.0"} if index <= timestamp_step else {"1.1.0", "1.2.0"}
        fresh = Client(f"{server.url}/k{index}", tmp_path / f"fresh-{index}", first_root(copy))
        assert fresh.versions() == expected, step
        assert cached.versions() == expected, step
        # The next publisher finds the lock free and clears the dead one's staging directory.
        FeedPublisher(copy).publish(runtime("1.3.0"), [load_signer(key)])
        assert dot_entries(copy) == {".publish.lock"}, step
        assert cached.versions() == {"1.1.0", "1.2.0", "1.3.0"} - ({"1.2.0"} if index <= timestamp_step else set())


def test_a_second_publisher_fails_fast_while_the_first_holds_the_lock(
        keys: Keys, runtime: Runtimes, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    key = keys.path("a")
    FeedPublisher(feed).publish(runtime("1.1.0"), [load_signer(key)])
    process, log = _publisher_process(tmp_path, feed, key, runtime("1.2.0"), 2, "holder")  # paused at "staged"
    try:
        assert _wait_stopped(process, log) == "staged"
        with pytest.raises(FeedBusyError, match=r"another publisher is working on .*/\.publish\.lock\); try again"):
            FeedPublisher(feed).publish(runtime("1.3.0"), keys("a"))
        with pytest.raises(FeedBusyError, match="after waiting 0.3s"):
            FeedPublisher(feed, lock_timeout=0.3).refresh(keys("a"))
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    # kill -9 released the lock.
    FeedPublisher(feed).publish(runtime("1.3.0"), keys("a"))
    assert {r["version"] for r in FeedPublisher(feed).releases()} == {"1.1.0", "1.3.0"}


def test_a_client_reading_during_publishes_never_sees_a_half_published_feed(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    publisher = FeedPublisher(feed)
    publisher.publish(runtime("1.0.0"), keys("a"))
    sources = [runtime(f"1.{minor}.0") for minor in range(1, 7)]
    client = Client(url, tmp_path / "client", first_root(feed))
    errors: list[str] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(len(client.releases()))
            except (RepositoryError, OSError, AssertionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for source in sources:
            publisher.publish(source, keys("a"))
            publisher.refresh(keys("a"))
    finally:
        done.set()
        reader.join(timeout=60)
    assert errors == []
    assert len(seen) > 5 and seen == sorted(seen), "releases only ever grow"
    assert client.versions() == {f"1.{minor}.0" for minor in range(7)}


# -- finding 3: expiry -----------------------------------------------------------------------------
def later(days: float) -> Callable[[], datetime]:
    return lambda: now_utc() + timedelta(days=days)


def test_a_year_on_refresh_renews_root_and_targets_not_only_timestamp_and_snapshot(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    year_on = now_utc() + timedelta(days=400)
    stale = {e.role: e for e in expiry_report(feed, now=year_on)}
    assert all(e.expired and e.needs_key for e in stale.values())
    assert "EXPIRED" in (stale["root"].warning() or "")

    refreshed = FeedPublisher(feed, clock=lambda: year_on).refresh(keys("a"))
    assert refreshed.renewed == ("root", "targets", "snapshot", "timestamp")
    assert refreshed.root_version == 2 and refreshed.warnings == ()
    fresh = {e.role: e for e in expiry_report(feed, now=year_on)}
    assert round(fresh["root"].days_left) == 365 and round(fresh["targets"].days_left) == 365
    assert not any(e.needs_key for e in fresh.values())
    assert Client(url, tmp_path / "client", first_root(feed)).versions() == {"1.1.0"}


def test_refresh_renews_root_only_within_the_window(keys: Keys, runtime: Runtimes, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    early = FeedPublisher(feed, clock=lambda: now_utc() + timedelta(days=300)).refresh(keys("a"))
    assert early.renewed == ("snapshot", "timestamp") and early.root_version == 1
    inside = FeedPublisher(feed, clock=lambda: now_utc() + timedelta(days=340)).refresh(keys("a"))
    assert inside.renewed == ("root", "targets", "snapshot", "timestamp") and inside.root_version == 2


def _split_feed(feed: Path, keys: Keys, runtime: Runtimes) -> None:
    """Offline root key, online key for targets, snapshot and timestamp."""
    root, online = (signer.public_key for signer in keys("root", "online"))
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("root", "online"),
                                keys={"root": [root], "targets": [online], "snapshot": [online], "timestamp": [online]})


def test_refresh_without_the_root_key_renews_the_rest_and_warns_loudly(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    _split_feed(feed, keys, runtime)
    clock = later(340)
    refreshed = FeedPublisher(feed, clock=clock).refresh(keys("online"))
    assert refreshed.renewed == ("targets", "snapshot", "timestamp") and refreshed.root_version == 1
    assert len(refreshed.warnings) == 1
    assert refreshed.warnings[0].startswith("WARNING: the feed's root metadata expires in 25 days")
    assert "--refresh" in refreshed.warnings[0] and "root key" in refreshed.warnings[0]
    # publish warns the same way.
    published = FeedPublisher(feed, clock=clock).publish(runtime("1.2.0"), keys("online"))
    assert any("root metadata expires in 25 days" in w for w in published.warnings)
    # With the root key, root is renewed too.
    renewed = FeedPublisher(feed, clock=clock).refresh(keys("online", "root"))
    assert "root" in renewed.renewed and renewed.root_version == 2 and renewed.warnings == ()
    assert Client(url, tmp_path / "client", first_root(feed)).versions() == {"1.1.0", "1.2.0"}


def test_refresh_refuses_when_root_has_expired_and_its_key_is_missing(
        keys: Keys, runtime: Runtimes, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    _split_feed(feed, keys, runtime)
    before = served_tree(feed)
    with pytest.raises(ExpiredRoleError, match="root metadata of .* expired on .* needs the root key"):
        FeedPublisher(feed, clock=later(400)).refresh(keys("online"))
    assert served_tree(feed) == before


def test_an_explicitly_expired_timestamp_is_still_signature_checked(keys: Keys, runtime: Runtimes,
                                                                     served: tuple[Path, str],
                                                                     tmp_path: Path) -> None:
    feed, url = served
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    FeedPublisher(feed).refresh(keys("a"), timestamp_expiry=timedelta(seconds=-60))
    with pytest.raises(RepositoryError, match="expired"):
        Client(url, tmp_path / "client", first_root(feed)).versions()
    FeedPublisher(feed).refresh(keys("a"))
    assert Client(url, tmp_path / "client", first_root(feed)).versions() == {"1.1.0"}


# -- bootstrap from a shipped root ---------------------------------------------------------------------
def test_export_root_writes_the_newest_root_that_bootstraps_a_client(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    publisher = FeedPublisher(feed)
    publisher.publish(runtime("1.1.0"), keys("old"))
    publisher.rotate_root(keys("old"), keys("new"))
    publisher.publish(runtime("1.2.0"), keys("new"))
    shipped = tmp_path / "resources" / "root.json"
    exported = export_root(feed, shipped)
    assert exported.version == 2 and exported.keyids == (keys.keyid("new"),)
    assert shipped.read_bytes() == (feed / "metadata" / "2.root.json").read_bytes()
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o644
    # The new root alone is enough; the retired key appears nowhere in it.
    assert keys.keyid("old") not in json.loads(shipped.read_bytes())["signed"]["keys"]
    assert Client(url, tmp_path / "app", shipped.read_bytes()).versions() == {"1.1.0", "1.2.0"}


def test_export_root_refuses_a_broken_root_history(keys: Keys, runtime: Runtimes, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    publisher = FeedPublisher(feed)
    publisher.publish(runtime("1.1.0"), keys("old"))
    publisher.rotate_root(keys("old"), keys("new"))
    # Root v2 re-signed by a key root v1 never trusted: a forged rotation.
    forged = Metadata.from_file(str(feed / "metadata" / "2.root.json"))
    forged.signatures.clear()
    forged.sign(keys("new")[0])
    (feed / "metadata" / "2.root.json").write_bytes(forged.to_bytes())
    out = tmp_path / "root.json"
    with pytest.raises(FeedStateError, match="2.root.json .* not signed by a threshold of the root keys of root v1"):
        export_root(feed, out)
    assert not out.exists()
    with pytest.raises(FeedStateError, match="holds no feed"):
        export_root(tmp_path / "nothing", out)


# -- finding 8: the feed is readable by the web server's user ------------------------------------------
@pytest.fixture
def world_traversable() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="feed-perms-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_web_server_running_as_another_user_serves_the_feed(
        keys: Keys, runtime: Runtimes, world_traversable: Path, tmp_path: Path) -> None:
    feed = world_traversable / "feed"
    previous = os.umask(0o077)  # what the shell sets for its own files
    try:
        publisher = FeedPublisher(feed)
        publisher.publish(runtime("1.1.0"), keys("a"))
        publisher.refresh(keys("a"))
        publisher.rotate_root(keys("a"), keys("b"))
        publisher.publish(runtime("1.2.0"), keys("b"), fmt="zip")
    finally:
        os.umask(previous)
    for path in [feed, *feed.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), f"{path} is {oct(mode)}"
    for path in sorted(feed.glob("*/*")):
        read = subprocess.run([*NOBODY, "cat", str(path)], capture_output=True, check=False)
        assert read.returncode == 0, f"uid 65534 cannot read {path}: {read.stderr!r}"
        assert read.stdout == path.read_bytes()

    port = _free_port()
    web = subprocess.Popen([*NOBODY, sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                            "--directory", str(feed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and web.poll() is None, "the web server did not start"
            time.sleep(0.05)
        client = Client(f"http://127.0.0.1:{port}", tmp_path / "client", first_root(feed))
        assert client.versions() == {"1.1.0", "1.2.0"}
    finally:
        web.terminate()
        web.wait(timeout=10)


def test_private_keys_stay_private_and_public_keys_are_readable(world_traversable: Path) -> None:
    previous = os.umask(0o077)
    try:
        pair = generate(world_traversable / "feed.key")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public_path.stat().st_mode) == 0o644
    assert subprocess.run([*NOBODY, "cat", str(pair.private_path)], capture_output=True,
                          check=False).returncode != 0
    public = subprocess.run([*NOBODY, "cat", str(pair.public_path)], capture_output=True, check=False)
    assert public.returncode == 0 and parse_public_key(public.stdout.decode()).keyid == parse_public_key(
        pair.public).keyid


def test_a_feed_written_0600_by_an_older_publisher_is_opened_up_on_the_next_write(
        keys: Keys, runtime: Runtimes, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    FeedPublisher(feed).publish(runtime("1.1.0"), keys("a"))
    for path in feed.glob("*/*"):
        os.chmod(path, 0o600)
    os.chmod(feed / "metadata", 0o700)
    FeedPublisher(feed).refresh(keys("a"))
    assert stat.S_IMODE((feed / "metadata").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in feed.glob("*/*")} == {0o644}


# -- reproducibility and idempotence --------------------------------------------------------------------
def test_same_bytes_same_facts_writes_nothing_and_a_wider_rollout_resigns(
        keys: Keys, runtime: Runtimes, served: tuple[Path, str], tmp_path: Path) -> None:
    feed, url = served
    source = runtime("1.1.0")
    publisher = FeedPublisher(feed)
    first = publisher.publish(source, keys("a"), rollout=10)
    before = served_tree(feed)
    again = publisher.publish(source, keys("a"), rollout=10)
    assert again.unchanged and (again.sha256, again.length) == (first.sha256, first.length)
    assert served_tree(feed) == before
    wider = publisher.publish(source, keys("a"), rollout=50)
    assert not wider.unchanged and wider.sha256 == first.sha256
    assert [p.name for p in (feed / "targets").glob("*.tar.gz")] == [f"{first.sha256}.{first.name}"]
    assert publisher.releases()[0]["rollout"] == 50
    with pytest.raises(ConflictError, match="different bytes"):
        publisher.publish(runtime("1.1.0", extra_files={"app/extra.txt": b"x"}), keys("a"))
    assert Client(url, tmp_path / "client", first_root(feed)).versions() == {"1.1.0"}


def test_bad_thresholds_are_refused_before_anything_is_written(keys: Keys, runtime: Runtimes,
                                                              tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    for thresholds, message in ((3, "root threshold 3 is more than its 2 key"), (0, "at least 1"),
                                ({"target": 1}, "unknown role 'target'")):
        with pytest.raises(UsageError, match=message):
            FeedPublisher(feed).create(keys("a", "b"), thresholds=thresholds)
        assert served_tree(feed) == {}
