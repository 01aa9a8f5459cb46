"""The guardian: a tiny process between the shell and the runtime so no child outlives the shell.

    python -I -S guardian.py SHELL_PID UMASK -- ARGV...      (frozen app: desktop --guard ...)

Standard library only and imported by nothing heavy, so it starts in ~20 ms. The shell spawns
it as the leader of a new process group; it spawns the runtime (ARGV) in that same group and:

* asks the kernel for SIGTERM when the shell dies (PR_SET_PDEATHSIG; the shell's pid is checked
  right after, so a shell that died in between is noticed too; elsewhere it polls its parent);
* gives the runtime SIGKILL when the guardian itself dies (PR_SET_PDEATHSIG in the child before
  exec), so even `kill -9` of the guardian takes the runtime along;
* is a child subreaper (PR_SET_CHILD_SUBREAPER): processes the runtime spawns and abandons are
  re-parented to the guardian, not to init, and are killed when the runtime ends;
* on SIGTERM / SIGINT / SIGHUP (an orderly stop from the shell, or the shell's death) it passes
  SIGTERM to the group, waits up to GRACE seconds for the runtime, then kills everything left;
* exits with the runtime's status (same exit code, or dies by the same signal), so the shell
  sees the runtime's outcome as if it had started it directly; when it was itself stopped by a
  signal (the shell, a logout, a `kill`), it dies by that signal, whatever the runtime did, so a
  stop from outside is never mistaken for the runtime failing.

Signals are never handled asynchronously: they are blocked and taken with sigtimedwait, so no
handler can interrupt the bookkeeping and no exit status is lost.

The runtime gets the user's umask back (the shell itself runs with 077).
Nothing here needs the runtime's cooperation: a runtime that ignores its parent and whose
children ignore theirs is still stopped. Windows uses a Job Object with kill-on-close instead
(docs/architecture.md).
"""

from __future__ import annotations

import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE = 2.0  # below the shell's own stop grace (supervisor.STOP_GRACE_S)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WAITED = (*STOP_SIGNALS, signal.SIGCHLD)


def _prctl() -> object:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def _spawn(argv: list[str], prctl: object, umask: int) -> int:
    guardian = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        # What subprocess.Popen(restore_signals=True) gives a child: Python ignores SIGPIPE; and
        # nothing the guardian blocks stays blocked in the runtime.
        for sig in (*STOP_SIGNALS, signal.SIGPIPE, getattr(signal, "SIGXFSZ", signal.SIGPIPE)):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if callable(prctl):
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != guardian:
            os._exit(137)
        os.umask(umask)
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, f"desktop guardian: cannot start {argv[0]}: {exc.strerror}\n".encode())
    finally:
        os._exit(127)


def _group_members(group: int) -> list[int]:
    """Processes in process group `group`, other than this one (Linux /proc)."""
    me = os.getpid()
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
            fields = data[data.rindex(b")") + 2:].split()
            if int(fields[2]) == group:
                found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as handle:
            return [int(x) for x in handle.read().split()]
    except (OSError, ValueError):
        return []


def _kill_leftovers() -> None:
    """SIGKILL every process left in our group and every orphan re-parented to us; reap them."""
    group = os.getpgrp()
    for _ in range(50):
        targets = set(_group_members(group)) | set(_children())
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while True:
                pid, _status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
        except ChildProcessError:
            if not targets:
                return
        if not targets and not _children():
            return
        time.sleep(0.02)


def _die_by(sig: int) -> int:
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    return 128 + sig


def _mirror(status: int) -> int:
    if os.WIFSIGNALED(status):
        return _die_by(os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


def _reap(runtime: int) -> int | None:
    """Reap every exited child (orphans included); the runtime's wait status if it is one of them."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == runtime:
            status = st


def main(args: list[str]) -> int:
    if len(args) < 4 or args[2] != "--":
        os.write(2, b"usage: guardian SHELL_PID UMASK -- ARGV...\n")
        return 2
    shell = int(args[0])
    umask = int(args[1], 8)
    argv = args[3:]
    prctl = _prctl()
    # Signals are only ever taken synchronously (sigtimedwait): no handler can interrupt the
    # bookkeeping, and a runtime that exits is never missed.
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    if callable(prctl):
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != shell:
        return 143
    runtime = _spawn(argv, prctl, umask)
    status: int | None = None
    stopped_by: int | None = None
    polling = not callable(prctl)
    while status is None:
        status = _reap(runtime)
        if status is not None:
            break
        if polling and os.getppid() != shell:
            stopped_by = signal.SIGTERM
            break
        info = signal.sigtimedwait(_WAITED, 0.2 if polling else 60.0)
        if info is not None and info.si_signo in STOP_SIGNALS:
            stopped_by = info.si_signo
            break
    if stopped_by is not None and status is None:
        status = _stop(runtime)
    _kill_leftovers()
    if stopped_by is not None:
        # Stopped from outside (the shell, a logout, a kill): say so, whatever the runtime did.
        return _die_by(stopped_by)
    assert status is not None
    return _mirror(status)


def _stop(runtime: int) -> int:
    """Pass SIGTERM to the group, give the runtime GRACE seconds, then SIGKILL; its wait status."""
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)  # blocked here: only the others get it
    except OSError:
        pass
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        status = _reap(runtime)
        if status is not None:
            return status
        signal.sigtimedwait([signal.SIGCHLD], max(0.0, min(0.05, deadline - time.monotonic())))
    try:
        os.kill(runtime, signal.SIGKILL)
    except OSError:
        pass
    try:
        _pid, status = os.waitpid(runtime, 0)
    except ChildProcessError:
        status = signal.SIGKILL
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
