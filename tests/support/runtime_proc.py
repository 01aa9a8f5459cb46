"""The bundled Notes runtime as a real subprocess, started the way the shell starts it.

    with BundledRuntime.start(tmp_path / "data") as runtime:
        httpx.get(runtime.url + "api/notes", headers=runtime.auth_headers)

The environment carries a fresh DESKTOP_RUNTIME_TOKEN (unless `token=None` asks the runtime to make
its own), an absolute DESKTOP_RUNTIME_DATA, DESKTOP_NATIVE_DIR and DESKTOP_SHELL_VERSION; `url` comes
from the ready line on stdout. Stderr is collected so a failure can show it.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_ROOT = REPO_ROOT / "resources" / "runtime"
NATIVE_DIR = REPO_ROOT / "resources" / "native"
TOKEN_HEADER = "X-Desktop-Token"
READY_TIMEOUT = 20.0
_UNSET: object = object()


@dataclass
class BundledRuntime:
    """A running bundled runtime: its process, URL, token and data dir."""

    proc: subprocess.Popen[str]
    url: str
    token: str | None
    data_dir: Path
    _stderr: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, data_dir: Path, *, token: str | None | object = _UNSET, shell_version: str = "9.8.7",
              extra_env: dict[str, str] | None = None) -> BundledRuntime:
        """Spawn `resources/runtime/app/main.py` and wait for its ready line."""
        if token is _UNSET:
            token = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTOP_")}
        env.update({
            "DESKTOP_RUNTIME_DATA": str(data_dir.resolve()),
            "DESKTOP_NATIVE_DIR": str(NATIVE_DIR),
            "DESKTOP_SHELL_VERSION": shell_version,
            "DESKTOP_RUNTIME_PARENT_PID": str(os.getpid()),
        })
        if isinstance(token, str):
            env["DESKTOP_RUNTIME_TOKEN"] = token
        env.update(extra_env or {})
        proc = subprocess.Popen(
            [sys.executable, str(RUNTIME_ROOT / "app" / "main.py")], env=env, cwd=data_dir.parent,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace",
        )
        lines: queue.Queue[str | None] = queue.Queue()
        stderr: list[str] = []

        def pump_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        def pump_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                stderr.append(line)

        threads = [threading.Thread(target=pump_stdout, daemon=True),
                   threading.Thread(target=pump_stderr, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            line = lines.get(timeout=READY_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"the bundled runtime did not get ready:\n{''.join(stderr)}")
        ready = json.loads(line)
        if not (isinstance(ready, dict) and ready.get("ready") is True and isinstance(ready.get("url"), str)):
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"unexpected ready line {line!r}")
        return cls(proc=proc, url=ready["url"], token=token if isinstance(token, str) else None,
                   data_dir=data_dir, _stderr=stderr, _threads=threads)

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header that proves the token (empty when the runtime made its own token)."""
        return {TOKEN_HEADER: self.token} if self.token else {}

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
