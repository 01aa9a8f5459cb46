"""Who is running what: one lease per live shell (running/<pid>.json), and start attempts.

Each shell that runs a runtime holds its own lease, written when it starts a version and
removed when it exits; readers take the union of the leases whose shell is still alive (same
pid *and* same process start time, so a reused pid does not count) and ignore stale ones. So
one shell exiting never unprotects another shell's running version from gc.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from desktop.core.errors import StateError
from desktop.core.state import Fields, atomic_write_json, read_json_object, remove_file
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether process `pid` exists (and, when given, is the one that started at `start_time`)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if start_time is None:
        return True
    now = process_start_time(pid)
    return now is None or now == start_time


@dataclass(frozen=True)
class Lease:
    """One live shell and the runtime it runs (or is starting)."""

    shell_pid: int
    shell_start: int | None
    version: Version
    source: str
    state: str  # "starting" | "running"
    group: int | None = None  # the runtime's process group
    group_start: int | None = None
    url: str | None = None
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"shell_pid": self.shell_pid, "shell_start": self.shell_start, "version": str(self.version),
                "source": self.source, "state": self.state, "group": self.group,
                "group_start": self.group_start, "url": self.url, "time": self.time}

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str) -> Lease | None:
        fields = Fields(obj, source)
        version = parse_version(fields.text("version"))
        pid = fields.integer("shell_pid", minimum=1)
        if version is None or pid <= 0:
            return None
        start = fields.integer("shell_start", minimum=0) if fields.has("shell_start") else None
        group = fields.integer("group", minimum=1) if fields.has("group") else None
        group_start = fields.integer("group_start", minimum=0) if fields.has("group_start") else None
        return cls(pid, start, version, fields.text("source", "staged") or "staged", fields.text("state", "running")
                   or "running", group or None, group_start, fields.text("url"), fields.number("time"))


class Leases:
    """The leases directory of one data dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.me = os.getpid()
        self.my_start = process_start_time(self.me)

    @property
    def mine(self) -> Path:
        return self.directory / f"{self.me}.json"

    def hold(self, version: Version, source: str, state: str, *, group: int | None = None,
             url: str | None = None) -> None:
        """Write (or update) this shell's lease; a read-only data dir only costs a warning."""
        lease = Lease(self.me, self.my_start, version, source, state, group,
                      process_start_time(group) if group else None, url, time.time())
        try:
            atomic_write_json(self.mine, lease.to_json(), fault="lease-write")
        except StateError as exc:
            log.warning("cannot record the running runtime: %s", exc)

    def release(self) -> None:
        with contextlib.suppress(StateError):
            remove_file(self.mine)

    def all(self) -> list[tuple[Path, Lease]]:
        result: list[tuple[Path, Lease]] = []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return result
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = self.directory / name
            obj = read_json_object(path, max_bytes=64 * 1024)
            lease = Lease.from_json(obj, str(path)) if obj else None
            if lease is not None:
                result.append((path, lease))
        return result

    def live(self) -> list[Lease]:
        """Leases of shells that are still alive (this one included)."""
        return [lease for _, lease in self.all() if pid_alive(lease.shell_pid, lease.shell_start)]

    def clean_stale(self) -> list[Lease]:
        """Remove leases of dead shells (and their torn temp files); stop a runtime group such a shell
        left behind."""
        stale: list[Lease] = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            names = []
        for name in names:
            # ".<pid>.json.<random>.tmp": a lease write that its shell never finished.
            pid = name[1:].split(".", 1)[0]
            if name.startswith(".") and name.endswith(".tmp") and pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
        for path, lease in self.all():
            if pid_alive(lease.shell_pid, lease.shell_start):
                continue
            stale.append(lease)
            if lease.group and lease.group_start is not None and pid_alive(lease.group, lease.group_start):
                log.warning("stopping runtime group %d left behind by shell %d", lease.group, lease.shell_pid)
                with contextlib.suppress(OSError):
                    os.killpg(lease.group, signal.SIGKILL)
            with contextlib.suppress(StateError):
                remove_file(path)
        return stale
