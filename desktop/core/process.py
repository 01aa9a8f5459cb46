"""One runtime process: spawn from the manifest's command, read the ready line, stop cleanly.

Process spawning happens only here. Output goes to a rotating log in the data dir and
the last stderr lines are kept for crash reports.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from desktop.core.config import AppConfig
from desktop.core.errors import LaunchError
from desktop.core.runmode import RUNTIME_MODE_FLAG, restore_library_path
from desktop.core.selection import LaunchTarget

log = logging.getLogger(__name__)

STDERR_TAIL = 20
MAX_READY_LINE = 64 * 1024
ENV_PASSTHROUGH = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                   "SYSTEMROOT", "WINDIR", "COMSPEC", "LD_LIBRARY_PATH", "XDG_RUNTIME_DIR")


def python_command() -> list[str]:
    """What `{python}` expands to: this interpreter, or the frozen app in runtime mode."""
    if getattr(sys, "frozen", False):
        return [sys.executable, RUNTIME_MODE_FLAG]
    return [sys.executable]


def build_argv(target: LaunchTarget) -> list[str]:
    entry = str((target.directory / target.manifest.entry).resolve())
    argv: list[str] = []
    for part in target.manifest.command:
        if part == "{python}":
            argv += python_command()
        else:
            argv.append(part.replace("{entry}", entry).replace("{dir}", str(target.directory.resolve())))
    return argv


def runtime_env(config: AppConfig, target: LaunchTarget) -> dict[str, str]:
    """The runtime's environment: what it needs, not the shell's secrets."""
    env = {k: v for k, v in os.environ.items() if k in ENV_PASSTHROUGH or k.startswith("LC_")}
    if getattr(sys, "frozen", False):
        # PyInstaller's bootloader put the bundle first on LD_LIBRARY_PATH: pass the user's on.
        restore_library_path(env, os.environ)
    native = config.native_root if target.is_bundled else target.directory
    env.update({
        "DESKTOP_RUNTIME_DATA": str(config.data.runtime_data_dir),
        "DESKTOP_SHELL_VERSION": config.shell_version,
        "DESKTOP_RUNTIME_VERSION": str(target.version),
        "DESKTOP_NATIVE_DIR": str(native.resolve()),
        "DESKTOP_RUNTIME_PARENT_PID": str(os.getpid()),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


_log_handlers: dict[Path, logging.Handler] = {}
_log_lock = threading.Lock()


def runtime_logger(config: AppConfig) -> logging.Logger:
    """A logger writing the runtime's output to logs/runtime.log (rotated at 1 MB, 3 kept)."""
    path = config.data.logs_dir / "runtime.log"
    name = f"desktop.runtime-output.{abs(hash(str(path)))}"
    logger = logging.getLogger(name)
    with _log_lock:
        if path not in _log_handlers:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=3,
                                                           encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            _log_handlers[path] = handler
    return logger


@dataclass(frozen=True)
class ExitOutcome:
    """How a runtime process ended (or failed to become ready)."""

    reason: str
    exit_code: int | None
    stderr_tail: list[str] = field(default_factory=list)
    before_ready: bool = True

    @staticmethod
    def describe(returncode: int) -> str:
        if returncode < 0:
            try:
                return f"signal {signal.Signals(-returncode).name}"
            except ValueError:
                return f"signal {-returncode}"
        return f"exit code {returncode}"


class RuntimeProcess:
    """A spawned runtime and the threads that read its output."""

    def __init__(self, config: AppConfig, target: LaunchTarget,
                 on_output: Callable[[str, str], None] | None = None) -> None:
        self.target = target
        self.ready_payload: dict[str, Any] | None = None
        self.ready_event = threading.Event()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._on_output = on_output
        self._log = runtime_logger(config)
        argv = build_argv(target)
        config.data.runtime_data_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            # Own process group: stop() can take down whatever the runtime spawned too.
            kwargs["start_new_session"] = True
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            self.popen = subprocess.Popen(
                argv, cwd=target.directory, env=runtime_env(config, target), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        except OSError as exc:
            raise LaunchError(f"cannot start runtime {target.version}: {exc}") from exc
        self.started_at = time.monotonic()
        self._log.info("[shell] started %s %s (pid %d): %s", target.source, target.version,
                       self.popen.pid, " ".join(argv))
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, stream: IO[bytes], name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw[:MAX_READY_LINE].decode("utf-8", "replace").rstrip("\r\n")
            self._log.info("[%s %s] %s", self.target.version, name, line)
            if name == "stderr":
                self.stderr_tail.append(line)
            elif not self.ready_event.is_set():
                payload = _ready_payload(line)
                if payload is not None:
                    self.ready_payload = payload
                    self.ready_event.set()
            if self._on_output:
                self._on_output(name, line)
        stream.close()

    def wait_ready(self, timeout: float, cancelled: threading.Event | None = None) -> ExitOutcome | None:
        """None once ready; otherwise why it never became ready (it is killed if still alive)."""
        deadline = time.monotonic() + timeout
        while not self.ready_event.wait(0.05):
            if self.popen.poll() is not None:
                # The ready line may still be in the pipe: let the reader drain it.
                self._readers[0].join(1.0)
                if self.ready_event.is_set():
                    return None
                self._join_readers()
                return ExitOutcome(ExitOutcome.describe(self.popen.returncode), self.popen.returncode,
                                   list(self.stderr_tail))
            if cancelled is not None and cancelled.is_set():
                self.stop()
                return ExitOutcome("cancelled", None, list(self.stderr_tail))
            if time.monotonic() >= deadline:
                self.stop(grace=1.0)
                return ExitOutcome(f"timeout ({timeout:g} s without a ready line)", None,
                                   list(self.stderr_tail))
        return None

    def wait_exit(self) -> ExitOutcome:
        code = self.popen.wait()
        self._join_readers()
        return ExitOutcome(ExitOutcome.describe(code), code, list(self.stderr_tail), before_ready=False)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """Terminate, wait, then kill: the whole process group, so no orphans are left."""
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
                self.popen.wait(5.0)
        if os.name == "posix":
            # Children the runtime left behind in its group.
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._join_readers()

    def _signal(self, sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _join_readers(self) -> None:
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(2.0)


def _ready_payload(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("ready") is True:
        return obj
    return None
