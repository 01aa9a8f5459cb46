"""One runtime process: spawned through the guardian, its ready line read, its output bounded.

Process spawning happens only here (called from the supervisor's own thread). Output is read
in bounded chunks, escaped (control characters cannot forge lines) and logged; the last
stderr lines are kept for crash reports.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from desktop.core.config import AppConfig
from desktop.core.errors import LaunchError
from desktop.core.launching import LaunchTarget
from desktop.core.runmode import GUARD_MODE_FLAG, RUNTIME_MODE_FLAG, restore_library_path
from desktop.core.text import sanitize_line

log = logging.getLogger(__name__)

STDERR_TAIL = 20
MAX_LINE = 8192  # characters kept of one output line; the rest is dropped
READ_CHUNK = 64 * 1024
ENV_PASSTHROUGH = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                   "SYSTEMROOT", "WINDIR", "COMSPEC", "LD_LIBRARY_PATH", "XDG_RUNTIME_DIR")
GUARDIAN = Path(__file__).with_name("guardian.py")
LOOPBACK_NAMES = ("localhost",)


def python_command() -> list[str]:
    """What `{python}` expands to: this interpreter, or the frozen app in runtime mode."""
    if getattr(sys, "frozen", False):
        return [sys.executable, RUNTIME_MODE_FLAG]
    return [sys.executable]


def guardian_command() -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, GUARD_MODE_FLAG]
    return [sys.executable, "-I", "-S", str(GUARDIAN)]


def build_argv(target: LaunchTarget) -> list[str]:
    entry = str((target.directory / target.manifest.entry).resolve())
    argv: list[str] = []
    for part in target.manifest.command:
        if part == "{python}":
            argv += python_command()
        else:
            argv.append(part.replace("{entry}", entry).replace("{dir}", str(target.directory.resolve())))
    return argv


def runtime_data_dir(config: AppConfig) -> Path:
    """The runtime's data dir; when the data dir is read-only and it does not exist yet, a private
    one in the temporary directory, so the runtime still starts."""
    wanted = config.data.runtime_data_dir.absolute()
    try:
        wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
        return wanted
    except OSError as exc:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        fallback = Path(tempfile.gettempdir()) / f"desktop-shell-runtime-data-{uid}"
        try:
            fallback.mkdir(mode=0o700, exist_ok=True)
            if fallback.is_symlink() or fallback.stat().st_uid != uid or fallback.stat().st_mode & 0o077:
                raise OSError("not private")
        except OSError:
            log.warning("cannot create the runtime's data dir %s: %s", wanted, exc)
            return wanted
        log.warning("cannot create the runtime's data dir %s (%s); using %s for now", wanted, exc, fallback)
        return fallback


def runtime_env(config: AppConfig, target: LaunchTarget, token: str, data_dir: Path | None = None) -> dict[str, str]:
    """The runtime's environment: what it needs, not the shell's secrets."""
    env = {k: v for k, v in os.environ.items() if k in ENV_PASSTHROUGH or k.startswith("LC_")}
    if getattr(sys, "frozen", False):
        # PyInstaller's bootloader put the bundle first on LD_LIBRARY_PATH: pass the user's on.
        restore_library_path(env, os.environ)
    native = config.native_root if target.is_bundled else target.directory
    env.update({
        "DESKTOP_RUNTIME_DATA": str(data_dir or config.data.runtime_data_dir.absolute()),
        "DESKTOP_RUNTIME_TOKEN": token,
        "DESKTOP_SHELL_VERSION": config.shell_version,
        "DESKTOP_RUNTIME_VERSION": str(target.version),
        "DESKTOP_NATIVE_DIR": str(native.resolve()),
        "DESKTOP_RUNTIME_PARENT_PID": str(os.getpid()),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def check_ready_url(url: object) -> str | None:
    """Why a ready line's `url` is unacceptable, or None: it must be http on a loopback address
    (127.0.0.1, [::1] or localhost) with an explicit port, and nothing else."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return "url is not a string"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return "url contains control characters or spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "url does not parse"
    if parts.scheme != "http":
        return f"url scheme {parts.scheme!r} is not http"
    if parts.username is not None or parts.password is not None:
        return "url carries credentials"
    host = (parts.hostname or "").lower()
    if host not in LOOPBACK_NAMES:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"url host {host!r} is not a loopback address"
        if str(address) not in ("127.0.0.1", "::1"):
            return f"url host {host!r} is not 127.0.0.1, [::1] or localhost"
    if port is None or not 0 < port < 65536:
        return "url has no explicit port"
    return None


def parse_ready(line: str) -> dict[str, Any] | None:
    """The ready object if `line` is a JSON object with `"ready": true`, else None."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and obj.get("ready") is True:
        return obj
    return None


def describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def new_token() -> str:
    return secrets.token_urlsafe(32)


class RuntimeProcess:
    """A spawned runtime (behind its guardian) and the threads that read its output.

    `wake` is called (from a reader thread) whenever something the supervisor waits for may
    have happened: the ready line arrived, an invalid one did, or an output stream ended.
    """

    def __init__(self, config: AppConfig, target: LaunchTarget, *, output: logging.Logger,
                 wake: Callable[[], None], on_output: Callable[[str, str], None] | None = None) -> None:
        self.target = target
        self.token = new_token()
        self.ready_payload: dict[str, Any] | None = None
        self.invalid_ready: str | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._output = output
        self._wake = wake
        self._on_output = on_output
        argv = build_argv(target)
        data_dir = runtime_data_dir(config)
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            umask = os.umask(0o077)
            os.umask(umask)
            argv = [*guardian_command(), str(os.getpid()), f"{umask:o}", "--", *argv]
            # The guardian leads a new process group, which the runtime joins: one killpg stops all.
            kwargs["start_new_session"] = True
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            self.popen = subprocess.Popen(
                argv, cwd=target.directory, env=runtime_env(config, target, self.token, data_dir),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        except OSError as exc:
            raise LaunchError(f"cannot start runtime {target.version}: {exc.strerror or exc}") from exc
        self.started_at = time.monotonic()
        self._output.info("[shell] started %s %s (pid %d): %s", target.source, target.version, self.popen.pid,
                          sanitize_line(" ".join(argv)))
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, "stdout"), daemon=True,
                             name=f"runtime-stdout-{self.popen.pid}"),
            threading.Thread(target=self._read, args=(self.popen.stderr, "stderr"), daemon=True,
                             name=f"runtime-stderr-{self.popen.pid}"),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def _read(self, stream: IO[bytes], name: str) -> None:
        fd = stream.fileno()
        pending = b""
        dropping = False
        try:
            while True:
                try:
                    chunk = os.read(fd, READ_CHUNK)
                except OSError:
                    break
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    if dropping:
                        dropping = False
                        continue
                    self._line(raw, name)
                if len(pending) > MAX_LINE * 4:
                    # A line with no end in sight: keep its start, drop the rest up to its newline.
                    if not dropping:
                        self._line(pending[: MAX_LINE * 4], name)
                    dropping = True
                    pending = b""
            if pending and not dropping:
                self._line(pending, name)
        finally:
            with contextlib.suppress(OSError):
                stream.close()
            self._wake()

    def _line(self, raw: bytes, name: str) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        shown = sanitize_line(text[:MAX_LINE])
        self._output.info("[%s %s] %s", self.target.version, name, shown)
        if name == "stderr":
            self.stderr_tail.append(shown)
        elif self.ready_payload is None and self.invalid_ready is None:
            payload = parse_ready(text)
            if payload is not None:
                problem = check_ready_url(payload["url"]) if "url" in payload else None
                if problem is None:
                    self.ready_payload = payload
                else:
                    self.invalid_ready = f"invalid ready line: {problem}"
                self._wake()
        if self._on_output is not None:
            try:
                self._on_output(name, shown)
            except Exception:  # a broken observer must not stop the output being read
                log.exception("output observer failed")

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the runtime's whole process group (safe anywhere, also in a signal handler)."""
        try:
            if os.name == "posix":
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM to the group, wait, then SIGKILL: nothing of the runtime is left; its exit code."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5.0)
        if os.name == "posix":
            self.signal_group(signal.SIGKILL)  # anything the guardian did not get to
        self.join_readers(1.0)
        return self.popen.poll()

    def join_readers(self, timeout: float) -> None:
        # A grandchild that kept a copy of the pipes would hold them open: never wait long.
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(timeout)
