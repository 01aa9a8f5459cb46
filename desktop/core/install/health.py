"""The health mark: how a shell tells its launcher it started (and so is not to be blamed).

The launcher names a file in DESKTOP_HEALTH_MARK. The shell writes it once it is healthy: a
headless command once the command is reached (the frozen interpreter, the imports and the
configuration worked; what the command then does, such as an update that fails offline, is
not the shell's fault), the GUI once its window is up. A shell that exits before writing it,
other than by a stop signal, crashed at startup: the launcher has it marked bad and starts the
fallback. The path is taken out of the environment at once so that no child process (the
guardian, a runtime, another shell) can write it.

Writing the mark also commits the shell: if this process runs the shell the pointer names,
the pointer becomes known-good (the previous one stays its fallback until then).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from packaging.version import Version

from desktop.core.errors import StateError
from desktop.core.install.root import HEALTH_MARK_ENV, LAUNCHER_ENV, InstallRoot, find_install_root, running_from
from desktop.core.pointer import Pointer, change_pointer
from desktop.core.state import atomic_write_json

log = logging.getLogger(__name__)

_pending: list[Path] = []  # the mark this process still has to write (at most one)


def take_from_environment() -> Path | None:
    """Remember the mark the launcher named and remove it from the environment; returns it.

    Also undoes what being the launcher's asynchronous child did: POSIX sh starts it with SIGINT
    ignored, which Python (and every child) would keep, so Ctrl-C would no longer stop it.
    """
    if os.environ.get(LAUNCHER_ENV) and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    value = os.environ.pop(HEALTH_MARK_ENV, None)
    if not value:
        return None
    path = Path(value)
    _pending.clear()
    _pending.append(path)
    return path


def report_healthy() -> bool:
    """Write the health mark (once) and commit the running shell; True if a mark was written now."""
    if not _pending:
        return False
    mark = _pending.pop()
    from desktop import __version__

    try:
        atomic_write_json(mark, {"version": __version__, "pid": os.getpid(), "time": time.time()})
    except StateError as exc:
        log.warning("cannot write the health mark: %s", exc)
        return False
    install = find_install_root()
    running = running_from(install.root) if install is not None else None
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
