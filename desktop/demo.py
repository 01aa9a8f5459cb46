"""`desktop demo`: a local signed feed on 127.0.0.1 that walks a newcomer through a full cycle.

Bundled runtime running -> 1.1.0 found, downloaded, "Restart to update" -> 1.1.0 running ->
1.2.0 (which crashes at startup) published and staged -> restart -> marked bad -> fallback.
"""

from __future__ import annotations

import functools
import http.server
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from desktop.core.feedrepo import FeedRepository
from desktop.core.keys import generate, load_signer
from desktop.devtools import derive_runtime

log = logging.getLogger(__name__)

GOOD_VERSION = "1.1.0"
CRASHING_VERSION = "1.2.0"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class DemoFeed:
    """A TUF feed in `root/feed`, served on a random 127.0.0.1 port, signed by `root/feed.key`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.feed_dir = root / "feed"
        self.key_path = root / "feed.key"
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
        handler = functools.partial(_QuietHandler, directory=str(self.feed_dir))
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

    def publish(self, version: str, *, simulate: str | None = None, notes: str = "") -> None:
        with self._lock:
            if version in self._published:
                return
            src = derive_runtime(self.root / "src" / version, version, simulate=simulate)
            FeedRepository(self.feed_dir).publish(src, load_signer(self.key_path), notes=notes)
            self._published.add(version)
            log.info("demo feed: published %s", version)

    def publish_good(self) -> None:
        self.publish(GOOD_VERSION, notes="Notes now shows word counts for every note.")

    def publish_crashing(self) -> None:
        self.publish(CRASHING_VERSION, simulate="crash-at-start",
                     notes="Demo: this build crashes at startup, so the shell marks it bad and falls back.")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def run_demo(*, data_dir: str | None, startup_timeout: float | None, check_interval: float,
             screenshot: Path | None, exit_after: float | None) -> int:
    """Publish 1.1.0 to a fresh local feed and run the app on a demo data dir pointed at it."""
    from dataclasses import replace

    import platformdirs

    from desktop.core.shell import Shell
    from desktop.ui.app import run_gui
    from desktop.ui.controller import ShellController

    root = Path(data_dir) if data_dir else Path(platformdirs.user_data_dir("desktop-shell", appauthor=False)) / "demo"
    feed = DemoFeed(root / "publisher").start(fresh=True)
    data = root / "data"
    if data.exists():
        shutil.rmtree(data)
    feed.publish_good()
    shell = Shell.open(data_dir=data, registry=feed.url, registry_kind="feed", public_key=feed.public_key,
                       channel="stable", startup_timeout=startup_timeout)
    shell = Shell(replace(shell.config, settings=replace(shell.config.settings, check_interval_s=check_interval,
                                                           auto_update=True)))
    log.info("demo feed at %s (data in %s)", feed.url, data)

    def wire(controller: ShellController) -> None:
        def on_runtime(state: str, info: dict[str, object]) -> None:
            if state == "running" and info.get("version") == GOOD_VERSION:
                feed.publish_crashing()
        controller.runtime_changed.connect(on_runtime)

    try:
        return run_gui(shell, initial_delay_s=3.0, screenshot=screenshot, exit_after_s=exit_after, on_controller=wire)
    finally:
        feed.stop()
