"""start-attempt.json: starts of a new version that took the whole shell down.

Before a not-yet-committed version is spawned, the attempt is recorded with this shell's
pid and start time. Ready clears it; a start interrupted by a signal, a quit or a stop puts
the record back as it was (it never counts); a crash before ready is handled (marked bad) and
clears it. Only a record whose shell died during the start is left behind: the next start
counts it as one unexplained death. The record is written atomically, so a kill -9 at any
instant leaves the old record or the new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from desktop.core.errors import StateError
from desktop.core.leases import pid_alive, process_start_time
from desktop.core.state import atomic_write_json, load_fields, remove_file
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    version: Version
    deaths: int  # starts of this version during which the shell died unexplained
    shell_pid: int | None = None  # a start in flight, by this shell
    shell_start: int | None = None


class StartAttempts:
    def __init__(self, path: Path, me: int) -> None:
        self.path = path
        self.me = me
        self.my_start = process_start_time(me)

    def load(self) -> Attempt | None:
        fields = load_fields(self.path)
        version = parse_version(fields.text("version")) if fields.has("version") else None
        if version is None:
            return None
        pid = fields.integer("shell_pid", minimum=1) if fields.has("shell_pid") else None
        start = fields.integer("shell_start", minimum=0) if fields.has("shell_start") else None
        return Attempt(version, fields.integer("deaths", minimum=0), pid or None, start)

    def deaths_before(self, version: Version) -> int:
        """Unexplained deaths of earlier starts of `version` (a dead in-flight start counts)."""
        attempt = self.load()
        if attempt is None or attempt.version != version:
            return 0
        deaths = attempt.deaths
        if attempt.shell_pid is not None and attempt.shell_pid != self.me \
                and not pid_alive(attempt.shell_pid, attempt.shell_start):
            deaths += 1
        return deaths

    def begin(self, version: Version, deaths: int) -> None:
        self._write(Attempt(version, deaths, self.me, self.my_start))

    def interrupted(self, version: Version, deaths: int) -> None:
        """Our start was interrupted: it does not count; earlier deaths stay counted."""
        if deaths:
            self._write(Attempt(version, deaths))
        else:
            self.clear()

    def clear(self) -> None:
        try:
            remove_file(self.path)
        except StateError as exc:
            log.warning("cannot clear the start attempt: %s", exc)

    def _write(self, attempt: Attempt) -> None:
        try:
            atomic_write_json(self.path, {"version": str(attempt.version), "deaths": attempt.deaths,
                                          "shell_pid": attempt.shell_pid, "shell_start": attempt.shell_start},
                              fault="attempt-write")
        except StateError as exc:
            log.warning("cannot record the start attempt: %s", exc)
