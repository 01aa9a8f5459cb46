"""Test helpers around the façade: staging a version, running supervisors, waiting for events."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from desktop.core.config import AppConfig
from desktop.core.policy import CrashRules
from desktop.core.results import Progress, RuntimeEvent, UpdateOutcome, UpdateReport
from desktop.core.shell import Shell
from desktop.core.supervisor import Supervisor


def update(config: AppConfig, **kwargs: Any) -> UpdateReport:
    """One `desktop update` through the façade, in this process."""
    return Shell(config).update(**kwargs)


def check(config: AppConfig, **kwargs: Any) -> Any:
    return Shell(config).check(**kwargs)


def stage(config: AppConfig, publish: Callable[..., Path], version: str, **kwargs: object) -> None:
    publish(version, **kwargs)
    report = update(config)
    assert report.outcome is UpdateOutcome.STAGED, report


class Supervised:
    """A supervisor and every event it emitted, in order."""

    def __init__(self, config: AppConfig, rules: CrashRules | None = None) -> None:
        self.supervisor: Supervisor = Shell(config).supervisor(rules=rules)
        self.events: list[RuntimeEvent] = []
        self.supervisor.add_listener(self.events.append)

    def start(self, timeout: float = 60.0) -> RuntimeEvent | None:
        self.supervisor.start()
        return self.supervisor.wait_settled(timeout)

    def wait_for(self, predicate: Callable[[list[RuntimeEvent]], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.events)):
                return True
            time.sleep(0.05)
        return False

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def supervised_fixture() -> Iterator[Callable[..., Supervised]]:
    made: list[Supervised] = []

    def make(config: AppConfig, **rules: float) -> Supervised:
        supervised = Supervised(config, CrashRules(**rules) if rules else None)  # type: ignore[arg-type]
        made.append(supervised)
        return supervised

    yield make
    for supervised in made:
        supervised.supervisor.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def phases(progress: list[Progress]) -> set[str]:
    return {p.phase.value for p in progress}


STUBBORN_MAIN = r'''
"""A runtime that ignores its parent and every stop signal, and leaves children behind."""
import json, os, signal, subprocess, sys, time, http.server, threading
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)
here = os.path.dirname(os.path.abspath(__file__))
mode = open(os.path.join(here, "mode")).read().strip()
escaped = subprocess.Popen(["sleep", "1000"], start_new_session=True)
child = subprocess.Popen(["sleep", "1001"])
pids = os.path.join(os.environ["DESKTOP_RUNTIME_DATA"], "stubborn-pids")
os.makedirs(os.path.dirname(pids), exist_ok=True)
with open(pids + ".tmp", "w") as handle:
    handle.write(f"{os.getpid()} {escaped.pid} {child.pid}\n")
os.replace(pids + ".tmp", pids)
if mode == "slow":
    time.sleep(1000)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(json.dumps({"ready": True, "url": f"http://127.0.0.1:{server.server_address[1]}/"}), flush=True)
time.sleep(1000)
'''


def stubborn_files(mode: str = "ready") -> dict[str, bytes]:
    """extra_files for derive_runtime: the entry becomes a stubborn runtime (see STUBBORN_MAIN)."""
    return {"app/main.py": STUBBORN_MAIN.encode(), "app/mode": mode.encode()}


def stubborn_pids(data_dir: Path, timeout: float = 20.0) -> list[int]:
    path = data_dir / "runtime-data" / "stubborn-pids"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("the stubborn runtime never started")
