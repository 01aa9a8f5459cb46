"""Parent watchdog: the runtime must not outlive the shell that started it."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

CHECK_INTERVAL = 0.5
GRACE_SECONDS = 5.0


def _posix_probe(pid: int) -> Callable[[], bool]:
    was_parent = os.getppid() == pid

    def alive() -> bool:
        # Once the real parent dies we are re-parented at once, even while it is a zombie
        # whose pid still answers kill(0); the pid may also be reused later.
        if was_parent and os.getppid() != pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:  # EPERM: it exists, it just is not ours
            return True
        return True

    return alive


def _windows_probe(pid: int) -> Callable[[], bool]:
    # os.kill(pid, 0) would *terminate* the process on Windows: hold a handle and poll it.
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32]
    kernel32.OpenProcess.restype = ctypes.c_void_p
    kernel32.WaitForSingleObject.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    kernel32.WaitForSingleObject.restype = ctypes.c_uint32
    synchronize, query_limited = 0x00100000, 0x1000
    handle = kernel32.OpenProcess(synchronize | query_limited, False, pid)
    if not handle:
        return lambda: False

    def alive() -> bool:
        return bool(kernel32.WaitForSingleObject(handle, 0) != 0)  # 0 == WAIT_OBJECT_0: exited

    return alive


def watch_parent(raw_pid: str | None, stop: threading.Event, log: Callable[[str], None]) -> None:
    """If `raw_pid` names a process, stop the runtime (set `stop`) once that process is gone.

    Should the orderly stop not finish within GRACE_SECONDS, the process exits hard.
    """
    if not raw_pid:
        return
    try:
        pid = int(raw_pid)
        if pid <= 0:
            raise ValueError
    except ValueError:
        log(f"warning: ignoring DESKTOP_RUNTIME_PARENT_PID={raw_pid!r}: not a process id")
        return
    alive = _windows_probe(pid) if sys.platform == "win32" else _posix_probe(pid)

    def watch() -> None:
        while alive():
            if stop.wait(CHECK_INTERVAL):
                return
        stop.set()
        log(f"parent process {pid} is gone; exiting")
        threading.Event().wait(GRACE_SECONDS)
        log("orderly stop took too long; exiting now")
        os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
