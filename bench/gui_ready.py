"""Time from starting the GUI app to its runtime being ready, and the shell's memory.

    .venv/bin/python bench/gui_ready.py [--runs 5]

Starts `desktop run` offscreen on a fresh data dir (offline registry), waits for the
"ready at" line in the shell's own log, samples the shell's RSS three seconds later, quits.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(data: Path) -> tuple[float, float]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DESKTOP_REGISTRY": "http://127.0.0.1:9/"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
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
