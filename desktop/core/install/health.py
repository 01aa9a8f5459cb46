"""The health mark: how a shell tells its launcher it started (and so is not to be blamed).

The launcher names a file in DESKTOP_HEALTH_MARK. The shell writes it once it is healthy: a
headless command once the command is reached (the frozen interpreter, the imports and the
configuration worked; what the command then does, such as an update that fails offline, is
not the shell's fault), the GUI once its window is up. A shell that exits before writing it,
other than by a stop signal, crashed at startup: the launcher has it marked bad and starts the
fallback. The path is taken out of the environment at once so that no child process (the
guardian, a runtime, another shell) can write it.

Writing the mark also records the shells that crashed before this one in the same launch
(DESKTOP_FAILED_SHELLS, see install/failure.py): this shell started healthy where they did not,
so they are to blame. And it commits the shell: if this process runs the shell the pointer
names, the pointer becomes known-good (the previous one stays its fallback until then).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from packaging.version import Version

from desktop.core.errors import DesktopError, StateError
from desktop.core.install.root import HEALTH_MARK_ENV, LAUNCHER_ENV, InstallRoot, find_install_root, running_from
from desktop.core.pointer import Pointer, change_pointer
from desktop.core.state import atomic_write_json

log = logging.getLogger(__name__)

FAILED_SHELLS_ENV = "DESKTOP_FAILED_SHELLS"

_pending: list[Path] = []  # the mark this process still has to write (at most one)
_failed: list[Path] = []  # the launcher's list of shells that crashed before this one


def take_from_environment() -> Path | None:
    """Remember the mark the launcher named and remove it from the environment; returns it.

    Also undoes what being the launcher's asynchronous child did: POSIX sh starts it with SIGINT
    ignored, which Python (and every child) would keep, so Ctrl-C would no longer stop it.
    """
    if os.environ.get(LAUNCHER_ENV) and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    value = os.environ.pop(HEALTH_MARK_ENV, None)
    failed = os.environ.pop(FAILED_SHELLS_ENV, None)
    _failed.clear()
    if not value:
        return None
    path = Path(value)
    _pending.clear()
    _pending.append(path)
    if failed:
        _failed.append(Path(failed))
    return path


def report_healthy(running: Version | None = None) -> bool:
    """Write the health mark (once), record the shells that crashed before this one, and commit the
    running shell (`running`: this shell's version, by default from where its executable lies).
    True if a mark was written now."""
    if not _pending:
        return False
    mark = _pending.pop()
    from desktop import __version__

    install = find_install_root()
    if install is not None and running is None:
        running = running_from(install.root)
    if install is not None and running is not None and _failed:
        from desktop.core.install.failure import record_launch_failures

        try:
            for failure in record_launch_failures(install, _failed.pop(), running):
                log.warning("shell %s %s; %s", failure.version, failure.reason,
                            "marked bad" if failure.marked_bad else
                            "set aside to be staged again" if failure.damaged else "not marked")
        except (DesktopError, OSError) as exc:
            # This shell is healthy all the same; the crash is seen again at the next start.
            log.warning("cannot record the shells that failed to start: %s", exc)
    try:
        atomic_write_json(mark, {"version": str(running or __version__), "pid": os.getpid(), "time": time.time()})
    except StateError as exc:
        log.warning("cannot write the health mark: %s", exc)
        return False
    if install is not None and running is not None:
        commit(install, running)
    return True


def commit(install: InstallRoot, version: Version) -> bool:
    """The pointer's shell started healthy: make it known-good; True if the pointer names it so now."""
    def mark_good(pointer: Pointer | None) -> Pointer | None:
        if pointer is None or pointer.version != version or pointer.known_good:
            return pointer
        return replace(pointer, known_good=True, updated_at=0.0)

    try:
        new = change_pointer(install.pointer_file, mark_good)
    except StateError as exc:
        log.warning("cannot commit shell %s: %s", version, exc)
        return False
    return new is not None and new.version == version and new.known_good
