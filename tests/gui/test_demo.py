"""`desktop demo`: a second demo leaves the running one alone, the feed is slow enough to watch,
and the crashing release comes only after the user has seen the calm step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.version import Version

from desktop.core.results import Running
from desktop.demo import CRASHING_VERSION, GOOD_VERSION, DemoDirector, DemoFeed

REPO = Path(__file__).resolve().parents[2]


def running(version: str) -> Running:
    return Running(Version(version), "staged", "http://127.0.0.1:1/", 1, {"ready": True})


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="run-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_for(predicate: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_second_demo_brings_the_first_forward_and_deletes_nothing(tmp_path: Path, runtime_dir: Path) -> None:
    """Item 8: single instance first, then reset: the running demo's data, lock and feed stay."""
    root = tmp_path / "demo"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DESKTOP_NO_WEBVIEW": "1",
           "XDG_RUNTIME_DIR": str(runtime_dir)}
    command = [sys.executable, "-m", "desktop", "demo", "--data-dir", str(root)]
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = root / "data" / "logs" / "desktop.log"
        assert wait_for(lambda: log.exists() and "ready at" in log.read_text(errors="replace")), \
            "the first demo's runtime got ready"
        marker = root / "data" / "runtime-data" / "my-notes-are-here"
        marker.write_text("a note the user wrote")
        feed_files = sorted(p.name for p in (root / "publisher" / "feed").rglob("*"))
        lock = root / "data" / "instance" / "lock"
        assert lock.exists()

        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "the demo is already running" in second.stderr
        assert first.poll() is None, "the first demo still runs"
        assert marker.read_text() == "a note the user wrote"
        assert lock.exists()
        assert sorted(p.name for p in (root / "publisher" / "feed").rglob("*")) == feed_files
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err


def test_the_demo_feed_serves_releases_slowly_enough_to_watch(tmp_path: Path) -> None:
    """Item 10, step 2: the download takes long enough for its progress to be seen."""
    rate, padding = 400_000, 300_000
    feed = DemoFeed(tmp_path / "publisher", rate=rate, padding=padding).start()
    try:
        feed.publish_good()
        target = next(p for p in (feed.feed_dir / "targets").iterdir() if GOOD_VERSION in p.name)
        size = target.stat().st_size
        assert size > padding, "the padding does not compress away"
        started = time.monotonic()
        with httpx.Client(trust_env=False, timeout=30) as client:
            body = client.get(feed.url + f"targets/{target.name}").content
        elapsed = time.monotonic() - started
        assert len(body) == size
        assert elapsed >= 0.8 * size / rate, f"{size} bytes in {elapsed:.2f} s: not throttled"
    finally:
        feed.stop()


class RecordingFeed:
    def __init__(self) -> None:
        self.published: list[tuple[str, float]] = []
        self.event = threading.Event()

    def publish_crashing(self) -> None:
        self.published.append((CRASHING_VERSION, time.monotonic()))
        self.event.set()


def test_the_crashing_release_waits_until_the_user_has_seen_the_update_run() -> None:
    """Item 10, steps 4 and 5: 1.2.0 is published only after 1.1.0 has run for the calm time, once."""
    feed = RecordingFeed()
    director = DemoDirector(feed, calm_s=0.5)  # type: ignore[arg-type]
    director.on_runtime(running("1.0.0"))
    assert director.timer is None, "nothing happens before 1.1.0 runs"
    seen = time.monotonic()
    director.on_runtime(running(GOOD_VERSION))
    director.on_runtime(running(GOOD_VERSION))  # a restart of 1.1.0 does not publish twice
    assert feed.published == [], "not at once: the user first sees 1.1.0 running"
    assert feed.event.wait(10)
    [(version, when)] = feed.published
    assert version == CRASHING_VERSION and when - seen >= 0.5
