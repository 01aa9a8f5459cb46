"""The GUI app's start and quit, measured on the real app (offscreen).

    .venv/bin/python bench/gui_ready.py [--runs 5]          # time to runtime ready, and RSS
    .venv/bin/python bench/gui_ready.py --quit [--runs 5]   # time from SIGTERM to exit

Start: `desktop run` on a fresh data dir (offline registry); waits for the "ready at" line in the
shell's own log, samples the shell's RSS three seconds later, quits.

Quit: `desktop run` against a local feed, SIGTERM once the first update check has reached the
registry, time until the process is gone. Two contenders get the same work: a registry that
answers ("answering") and one that holds the check for a minute ("stalled"); they run interleaved,
the order rotated each round, and the ratio stalled/answering shows whether quitting waits for
the registry (1.0: it does not).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def app_env() -> dict[str, str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    return env


def one_run(data: Path) -> tuple[float, float]:
    env = {**app_env(), "DESKTOP_REGISTRY": "http://127.0.0.1:9/"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "run", "--data-dir", str(data)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = data / "logs" / "desktop.log"
    try:
        deadline = started + 60
        while not (log.exists() and "ready at" in log.read_text(errors="replace")):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the app did not get its runtime ready")
            time.sleep(0.01)
        ready = time.monotonic() - started
        time.sleep(3)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+)", status)
        rss = int(match.group(1)) / 1024 if match else float("nan")
    finally:
        proc.terminate()
        proc.wait(30)
    return ready, rss


def quit_once(data: Path, stalled: bool) -> float:
    """Seconds from SIGTERM to exit, the first update check under way (stalled) or answered."""
    from tests.support.feed import Feed
    from tests.support.server import LoopbackServer

    with LoopbackServer() as server:
        feed = Feed(data.parent / f"{data.name}-feed", server, data.parent / f"{data.name}-work")
        feed.publish("0.9.0")  # nothing newer: an answered check is a quick "up to date"
        if stalled:
            server.fault("/feed/metadata/timestamp.json", "stall", seconds=60)
        proc = subprocess.Popen([sys.executable, "-m", "desktop", "run", "--data-dir", str(data), "--registry",
                                 feed.url, "--registry-kind", "feed", "--public-key", feed.key.public],
                                cwd=REPO, env=app_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if stalled:
                if not server.wait_for_stalled(1, timeout=60):
                    raise RuntimeError("the app's check never reached the registry")
            else:
                deadline = time.monotonic() + 60
                while not (data / "last-check.json").exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError("the app's check never finished")
                    time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            proc.wait(30)
            return time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def filesystem(path: Path) -> str:
    result = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def bench_quit(runs: int) -> None:
    times: dict[str, list[float]] = {"answering": [], "stalled": []}
    with tempfile.TemporaryDirectory() as tmp:
        order = ["answering", "stalled"]
        for round_ in range(runs):
            for name in order:
                times[name].append(quit_once(Path(tmp) / f"{name}-{round_}", stalled=name == "stalled"))
            order.reverse()
        fs = filesystem(Path(tmp))
    for name, values in times.items():
        print(f"quit after SIGTERM, registry {name:9s}: min {min(values):.2f} s  "
              f"median {statistics.median(values):.2f} s  runs {[round(v, 2) for v in values]}")
    ratio = statistics.median(times["stalled"]) / statistics.median(times["answering"])
    print(f"median stalled / answering: {ratio:.2f} ({runs} rounds, interleaved, data dir on {fs})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quit", action="store_true", help="measure quitting instead of starting")
    args = parser.parse_args()
    if args.quit:
        bench_quit(args.runs)
        return 0
    times, rss = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            ready, mem = one_run(Path(tmp) / f"data-{i}")
            times.append(ready)
            rss.append(mem)
    print(f"time to runtime ready: median {statistics.median(times):.2f} s  runs {[round(t, 2) for t in times]}")
    print(f"shell RSS after ready: median {statistics.median(rss):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
