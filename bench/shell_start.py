"""What the launcher costs: time from a start to the window showing, through the launcher and direct.

    .venv/bin/python bench/shell_start.py [--rounds 5]

Installs the built per-user archive (dist/desktop-shell-*.tar.gz, from installer/build.py) into a
temporary HOME with its install.sh, then, interleaved and in rotating order, starts the app
offscreen (a) as the menu entry does (the Exec line: the launcher) and (b) by running the
installed shell's executable directly. Both get a health-mark path; the time is from the
process start to the mark's own timestamp (written once the window is up and the event loop
turned), so both sides do the same work except the launcher. Each start is on a fresh data dir
and an offline registry; the app is stopped with SIGTERM once the mark is there. Also times a
headless `status --json` both ways. Prints min and median of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.installs import desktop_entry_exec  # noqa: E402


def install(work: Path) -> tuple[Path, Path, list[str]]:
    (archive,) = (REPO / "dist").glob("desktop-shell-*-linux-*.tar.gz")
    home = work / "home"
    home.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(work / "dl", filter="tar")
    top = work / "dl" / archive.name[: -len(".tar.gz")]
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_DATA_HOME", None)
    subprocess.run([str(top / "install.sh")], env=env, check=True, capture_output=True)
    root = home / ".local" / "share" / "desktop-shell-app"
    argv = desktop_entry_exec(home / ".local" / "share" / "applications" / "desktop-shell.desktop")
    return home, root, argv


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTOP_")}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", DESKTOP_REGISTRY="http://127.0.0.1:9/feed/", **extra)
    env.pop("XDG_DATA_HOME", None)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    return env


def gui_start(argv: list[str], env: dict[str, str], marks: Path) -> float:
    """Seconds from starting `argv` to the health mark's timestamp; the app is then stopped."""
    before = set(marks.glob("*.ok")) if marks.exists() else set()
    started = time.time()
    proc = subprocess.Popen([*argv, "run", "--data-dir", env["BENCH_DATA"]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for mark in set(marks.glob("*.ok")) - before if marks.exists() else ():
                try:
                    return float(json.loads(mark.read_text())["time"]) - started
                except (OSError, ValueError, KeyError):
                    pass
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited {proc.returncode} before its window showed")
            time.sleep(0.005)
        raise RuntimeError("no window within 60 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def headless(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run([*argv, "status", "--json", "--data-dir", env["BENCH_DATA"]], env=env, check=True,
                   capture_output=True)
    return time.monotonic() - started


def summary(name: str, values: list[float]) -> str:
    return f"{name}: min {min(values):.3f} s, median {statistics.median(values):.3f} s ({len(values)} runs)"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"launcher window": [], "direct window": [], "launcher status": [],
                                       "direct status": []}
    with tempfile.TemporaryDirectory(prefix="shell-start-") as tmp:
        work = Path(tmp)
        fs = subprocess.run(["df", "-T", tmp], capture_output=True, text=True, check=False).stdout.splitlines()[-1]
        home, root, launcher = install(work)
        version = (root / "installed").read_text().strip()
        direct = [str(root / "shells" / version / "desktop")]
        direct_marks = work / "direct-marks"
        direct_marks.mkdir()
        for round_no in range(args.rounds):
            order = ["launcher", "direct"] if round_no % 2 == 0 else ["direct", "launcher"]
            for kind in order:
                data = str(work / f"data-{kind}-{round_no}")
                if kind == "launcher":
                    env = env_for(home, BENCH_DATA=data)
                    results["launcher window"].append(gui_start(launcher, env, root / "health"))
                    results["launcher status"].append(headless(launcher, env))
                else:
                    mark = direct_marks / f"{round_no}.ok"
                    env = env_for(home, BENCH_DATA=data, DESKTOP_HEALTH_MARK=str(mark))
                    results["direct window"].append(gui_start(direct, env, direct_marks))
                    results["direct status"].append(headless(direct, env_for(home, BENCH_DATA=data)))
    print(f"filesystem: {fs}")
    for name, values in results.items():
        print(summary(name, values))
    for what in ("window", "status"):
        ratio = statistics.median(results[f"launcher {what}"]) / statistics.median(results[f"direct {what}"])
        print(f"launcher / direct, {what}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
