"""`desktop demo`: a local signed feed on 127.0.0.1 that walks a newcomer through a full cycle.

1. the bundled runtime (1.0.0) runs;
2. the first check finds 1.1.0 and downloads it, slowly enough to watch (the feed is throttled);
3. a banner offers "Restart to update";
4. 1.1.0 runs, "What's new" is offered once, and the window stays calm for a while;
5. only then is 1.2.0 (a build that crashes at startup) published; the next check stages it and,
   after the user's "Restart to update", it fails, is marked bad, and 1.1.0 runs again;
6. the Updates panel shows all of it.

A second `desktop demo` on the same folder only brings the first one's window forward: the
single-instance lock is taken before anything is reset.
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from desktop.core.feedrepo import FeedRepository
from desktop.core.keys import generate, load_signer
from desktop.core.results import Running, RuntimeEvent
from desktop.core.tree import remove_tree
from desktop.devtools import derive_runtime

log = logging.getLogger(__name__)

GOOD_VERSION = "1.1.0"
CRASHING_VERSION = "1.2.0"
RATE_BYTES_S = 320 * 1024  # release archives are served this fast, so the progress can be watched
PADDING_BYTES = 1_600_000  # incompressible filler in each demo release: a few seconds of download
CALM_S = 30.0  # 1.1.0 runs this long before the crashing release is published
GOOD_NOTES = """\
## Word counts
- Every note now shows how many **words** and lines it has.
- The heading sums up all your notes.

Your notes are kept across updates and rollbacks.
"""
CRASHING_NOTES = """\
## A broken build, on purpose
This build crashes at startup. The shell marks it *bad*, goes back to 1.1.0 and never
installs it again unless you allow it in **Updates…**.
"""


class _FeedHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the feed directory; release archives (targets) at a limited rate."""

    def __init__(self, *args: Any, rate: float, **kwargs: Any) -> None:
        self.rate = rate
        super().__init__(*args, **kwargs)

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        if "/targets/" not in self.path or self.rate <= 0:
            super().copyfile(source, outputfile)
            return
        chunk = 16 * 1024
        while piece := source.read(chunk):
            outputfile.write(piece)
            time.sleep(len(piece) / self.rate)

    def log_message(self, format: str, *args: Any) -> None:
        return


class DemoFeed:
    """A TUF feed in `root/feed`, served on a random 127.0.0.1 port, signed by `root/feed.key`."""

    def __init__(self, root: Path, *, rate: float = RATE_BYTES_S, padding: int = PADDING_BYTES) -> None:
        self.root = root
        self.feed_dir = root / "feed"
        self.key_path = root / "feed.key"
        self.rate = rate
        self.padding = padding
        self._server: http.server.ThreadingHTTPServer | None = None
        self._published: set[str] = set()
        self._lock = threading.Lock()

    def start(self, fresh: bool = True) -> DemoFeed:
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.key_path.exists():
            generate(self.key_path)
        self.feed_dir.mkdir(exist_ok=True)
        handler = functools.partial(_FeedHandler, directory=str(self.feed_dir), rate=self.rate)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="demo-feed", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def public_key(self) -> str:
        return self.key_path.with_name(self.key_path.name + ".pub").read_text().strip()

    def published(self) -> set[str]:
        with self._lock:
            return set(self._published)

    def publish(self, version: str, *, simulate: str | None = None, notes: str = "") -> None:
        with self._lock:
            if version in self._published:
                return
            extra = {"assets/demo-padding.bin": os.urandom(self.padding)} if self.padding else None
            src = derive_runtime(self.root / "src" / version, version, simulate=simulate, extra_files=extra)
            FeedRepository(self.feed_dir).publish(src, load_signer(self.key_path), notes=notes)
            self._published.add(version)
            log.info("demo feed: published %s", version)

    def publish_good(self) -> None:
        self.publish(GOOD_VERSION, notes=GOOD_NOTES)

    def publish_crashing(self) -> None:
        self.publish(CRASHING_VERSION, simulate="crash-at-start", notes=CRASHING_NOTES)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class DemoDirector:
    """Publishes the crashing release only after 1.1.0 has run calmly for `calm_s`, so that the
    user sees step 4 before step 5 is offered. Publishing runs on a thread of its own (packing
    and signing take a moment; the window must not wait)."""

    def __init__(self, feed: DemoFeed, calm_s: float = CALM_S) -> None:
        self.feed = feed
        self.calm_s = calm_s
        self.timer: threading.Timer | None = None

    def on_runtime(self, event: RuntimeEvent) -> None:
        if isinstance(event, Running) and str(event.version) == GOOD_VERSION and self.timer is None:
            self.timer = threading.Timer(self.calm_s, self._publish)
            self.timer.daemon = True
            self.timer.start()

    def _publish(self) -> None:
        try:
            self.feed.publish_crashing()
        except Exception:  # the demo goes on without step 5 rather than crash the app
            log.exception("demo feed: could not publish %s", CRASHING_VERSION)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def reset_data(data: Path, keep: str) -> None:
    """Empty the demo's data dir, except `keep` (the single-instance lock the caller holds)."""
    for child in data.iterdir():
        if child.name != keep:
            remove_tree(child)


def demo_root(data_dir: str | None) -> Path:
    import platformdirs

    if data_dir:
        return Path(data_dir)
    return Path(platformdirs.user_data_dir("desktop-shell", appauthor=False)) / "demo"


def run_demo(*, data_dir: str | None, startup_timeout: float | None, check_interval: float,
             screenshot: Path | None, exit_after: float | None, calm_s: float = CALM_S,
             rate: float = RATE_BYTES_S) -> int:
    """Publish 1.1.0 to a fresh local feed and run the app on a fresh demo data dir pointed at it."""
    from dataclasses import replace

    from desktop.core.shell import Shell
    from desktop.ui.app import ensure_app, run_gui
    from desktop.ui.controller import ShellController
    from desktop.ui.single_instance import INSTANCE_DIR, SingleInstance

    root = demo_root(data_dir)
    data = root / "data"
    os.makedirs(data, mode=0o700, exist_ok=True)
    ensure_app()
    instance = SingleInstance(data)
    if not instance.acquire():
        print(f"desktop: the demo is already running on {root}; brought its window to the front", file=sys.stderr)
        return 0
    feed = DemoFeed(root / "publisher", rate=rate)
    director = DemoDirector(feed, calm_s)
    try:
        reset_data(data, keep=INSTANCE_DIR)
        feed.start(fresh=True)
        feed.publish_good()
        shell = Shell.open(data_dir=data, registry=feed.url, registry_kind="feed", public_key=feed.public_key,
                           channel="stable", startup_timeout=startup_timeout)
        settings = replace(shell.config.settings, check_interval_s=check_interval, auto_update=True)
        shell = Shell(replace(shell.config, settings=settings))
        log.info("demo feed at %s (data in %s)", feed.url, data)

        def wire(controller: ShellController) -> None:
            controller.runtime_event.connect(director.on_runtime)

        return run_gui(shell, initial_delay_s=3.0, screenshot=screenshot, exit_after_s=exit_after,
                       on_controller=wire, instance=instance)
    finally:
        director.cancel()
        feed.stop()
        instance.release()
