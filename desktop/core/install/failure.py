"""A shell that crashed at startup, recorded by the installed shell on the launcher's behalf.

The launcher (a POSIX sh script) cannot write the state files; it runs the installed shell
(`desktop shell-failed VERSION --exit-code N --stderr-file F`), which is known good, and starts
whatever version that prints. The rules are the runtime's: blame the shell that actually ran
(the launcher names it), never the installed one; a build that no longer matches its staging
record was damaged on disk, so it is set aside to be staged again rather than marked bad;
move the pointer back only once the bad mark is written, and only if it still names the failed
shell; choose the fallback explicitly (last known-good, else the installed shell).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
from pathlib import Path

from packaging.version import Version

from desktop.core import policy
from desktop.core.badlist import BadVersions, bounded_tail
from desktop.core.errors import StateError
from desktop.core.install.artefact import ShellArtefact
from desktop.core.install.root import InstallRoot
from desktop.core.launching import trusted_versions
from desktop.core.pointer import Pointer, move_pointer_if, read_pointer
from desktop.core.results import ShellFailure
from desktop.core.state import fsync_dir
from desktop.core.tree import remove_tree_quietly

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
                   artefact: ShellArtefact | None = None) -> ShellFailure:
    """Record that shell `version` failed to start; returns the fallback to start now."""
    installed = install.installed_version()
    if installed is None:
        raise StateError(f"{install.installed_file} names no installed shell")
    reason = describe_exit(exit_code)
    if version == installed:
        # The installed shell is the last resort: never marked bad, nothing else to start.
        return ShellFailure(version, reason, False, False, installed, "installed")
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
    pointer = read_pointer(install.pointer_file)
    bad = BadVersions(install.bad_file).load()
    trusted = trusted_versions(pointer)
    fallback = policy.choose_fallback(version, pointer, bundled=installed,
                                      is_bad=lambda v: bad.is_bad(v, trusted=trusted),
                                      usable=lambda v: artefact.problem(v) is None)
    if marked or damaged:
        try:
            move_pointer_if(install.pointer_file, version,
                            Pointer(fallback, known_good=True) if fallback is not None else None)
        except StateError as exc:
            log.warning("cannot move the shell pointer back: %s", exc)
    if fallback is None:
        return ShellFailure(version, reason, marked, damaged, installed, "installed")
    return ShellFailure(version, reason, marked, damaged, fallback, "last known-good")


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
