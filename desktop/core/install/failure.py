"""Shells that crashed at startup, recorded by the shell that then started healthy instead.

The launcher (a POSIX sh script) cannot write the state files. When a shell exits before its
health mark, the launcher starts the fallback (the pointer's last known-good, else the installed
shell) and lists the crash in the file named by DESKTOP_FAILED_SHELLS. Only when a fallback then
starts healthy in the same environment are the crashes blamed on their shells: that shell
records them here. If even the installed shell fails, nothing is marked: the cause is the
machine (no display, a missing system library), and marking every shell bad for it would leave
the user stuck on the installed one once the machine is fixed.

The rules are the runtime's: blame the shell that actually ran (the launcher names it), never
the installed one; a build that no longer matches its staging record was damaged on disk, so it
is set aside to be staged again rather than marked bad; move the pointer only once the bad mark
is written, and only if it still names the failed shell; the new pointer is the shell that
proved healthy (chosen by the launcher from the pointer as it was when the launch began).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
from pathlib import Path

from packaging.version import Version

from desktop.core.badlist import BadVersions, bounded_tail
from desktop.core.errors import StateError
from desktop.core.install.artefact import ShellArtefact
from desktop.core.install.root import InstallRoot
from desktop.core.pointer import Pointer, move_pointer_if
from desktop.core.results import ShellFailure
from desktop.core.state import fsync_dir
from desktop.core.tree import remove_tree_quietly
from desktop.core.versions import parse_version

log = logging.getLogger(__name__)

MAX_STDERR_READ = 64 * 1024


def describe_exit(code: int) -> str:
    """A shell's exit status as sh reports it (128 + N for a signal) in words."""
    if code > 128 and code - 128 < 65:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"killed by {name} before it was ready"
    return f"exited with code {code} before it was ready"


def read_tail(path: Path | None) -> list[str]:
    """The last lines of the shell's stderr the launcher captured (bounded, never through a link)."""
    if path is None:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return []
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return []
        data = os.pread(fd, MAX_STDERR_READ, max(st.st_size - MAX_STDERR_READ, 0))
    except OSError:
        return []
    finally:
        os.close(fd)
    return list(bounded_tail(data.decode("utf-8", "replace").splitlines()))


def record_failure(install: InstallRoot, version: Version, *, exit_code: int, stderr_tail: list[str],
                   started: Version, artefact: ShellArtefact | None = None) -> ShellFailure:
    """Record that shell `version` failed to start where shell `started` then started healthy."""
    installed = install.installed_version()
    if installed is None:
        raise StateError(f"{install.installed_file} names no installed shell")
    reason = describe_exit(exit_code)
    source = "installed" if started == installed else "last known-good"
    if version in (installed, started):
        # The installed shell is the last resort: never marked bad.
        return ShellFailure(version, reason, False, False, started, source)
    artefact = artefact or ShellArtefact(install)
    damage = artefact.problem(version) if install.shell_dir(version).is_dir() else None
    marked = damaged = False
    if damage is not None:
        log.warning("shell %s no longer matches what was staged (%s); setting it aside to stage it again",
                    version, damage)
        damaged = _set_aside(install.shell_dir(version))
    else:
        try:
            BadVersions(install.bad_file).mark(version, reason, exit_code, stderr_tail)
            marked = True
        except StateError as exc:
            # The pointer stays: the next start fails again and the mark is retried then.
            log.warning("cannot mark shell %s bad: %s", version, exc)
    if marked or damaged:
        try:
            move_pointer_if(install.pointer_file, version,
                            Pointer(started, known_good=True) if started != installed else None)
        except StateError as exc:
            log.warning("cannot move the shell pointer back: %s", exc)
    return ShellFailure(version, reason, marked, damaged, started, source)


def record_launch_failures(install: InstallRoot, listing: Path, started: Version) -> list[ShellFailure]:
    """Record the crashes the launcher listed (`<version> <exit status> <start number>` per line, with
    each start's stderr in `<pid>.<start number>.stderr` beside the list); `started` is this shell."""
    if listing.parent.resolve() != install.health_dir.resolve() or not listing.name.endswith(".failed"):
        log.warning("ignoring a list of failed shells outside %s", install.health_dir)
        return []
    prefix = listing.name[: -len(".failed")]
    try:
        fd = os.open(listing, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            text = os.read(fd, 64 * 1024).decode("ascii", "replace")
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot read the failed shells %s: %s", listing, exc.strerror or exc)
        return []
    recorded: list[ShellFailure] = []
    for line in text.splitlines():
        parts = line.split()
        version = parse_version(parts[0]) if len(parts) == 3 else None
        if version is None or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        tail = read_tail(listing.with_name(f"{prefix}.{int(parts[2])}.stderr"))
        recorded.append(record_failure(install, version, exit_code=int(parts[1]), stderr_tail=tail, started=started))
    return recorded


def _set_aside(directory: Path) -> bool:
    aside = directory.with_name(f".{directory.name}.damaged-{secrets.token_hex(4)}")
    try:
        os.rename(directory, aside)
    except OSError as exc:
        log.warning("cannot set aside %s: %s", directory, exc.strerror or exc)
        return False
    fsync_dir(directory.parent)
    remove_tree_quietly(aside)
    return True
