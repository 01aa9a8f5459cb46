"""notes-runtime: the bundled runtime, a small local Notes web app (standard library only).

Started by the desktop shell as `python app/main.py`. Contract with the shell:
- prints exactly one JSON line on stdout once it serves:
  {"ready": true, "url": "http://127.0.0.1:PORT/", "version": "<v>", "pid": <pid>};
  everything else goes to stderr, one line per message, prefixed "notes-runtime: ";
- exits 0 on SIGTERM / SIGINT, and when the process named by DESKTOP_RUNTIME_PARENT_PID dies.

Environment:
  DESKTOP_RUNTIME_TOKEN       this launch's secret: every request must carry it as the
                              X-Desktop-Token header or the cookie that GET /login?token=...
                              sets; without it a random one is made and the login URL is
                              printed on stderr (never stdout)
  DESKTOP_RUNTIME_DATA        directory for notes.json (default ./runtime-data, with a warning)
  DESKTOP_SHELL_VERSION       shown on the page and in /api/info ("unknown" if unset)
  DESKTOP_RUNTIME_PARENT_PID  exit when this process is gone (checked every 0.5 s)

Exit codes: 0 clean stop, 2 unreadable runtime.json, 3 native dependency missing,
4 data directory unusable, 5 cannot listen, 6 malformed DESKTOP_RUNTIME_TOKEN,
17/18 simulated crashes (see `simulate`).

runtime.json's optional "simulate" makes broken versions of this same code for tests:
  crash-at-start            exit 17 before the ready line
  hang-at-start             never print the ready line (still stops on SIGTERM)
  crash-after-ready:SECONDS print the ready line, then exit 18 after SECONDS
  exit-clean-at-start       exit 0 before the ready line
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

APP_DIR = Path(__file__).resolve().parent
RUNTIME_ROOT = APP_DIR.parent
# Sibling modules are imported by plain name, also when this file is run through runpy.
if not sys.path or sys.path[0] != str(APP_DIR):
    sys.path.insert(0, str(APP_DIR))

from notes_auth import TOKEN_ENV, LaunchToken, TokenError  # noqa: E402
from notes_native import NAME as NATIVE_NAME  # noqa: E402
from notes_native import NativeMissing, TextStats, library_file  # noqa: E402
from notes_page import AppInfo  # noqa: E402
from notes_store import NoteStore  # noqa: E402
from notes_watchdog import watch_parent  # noqa: E402
from notes_web import NotesServer  # noqa: E402

PROG = "notes-runtime"
EXIT_OK = 0
EXIT_BAD_MANIFEST = 2
EXIT_NATIVE_MISSING = 3
EXIT_DATA_DIR = 4
EXIT_LISTEN = 5
EXIT_BAD_TOKEN = 6
EXIT_SIMULATED_START_CRASH = 17
EXIT_SIMULATED_CRASH = 18
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def log(message: str) -> None:
    """One diagnostic line on stderr (stdout carries only the ready line)."""
    try:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        # The shell that read our stderr is gone (broken pipe): keep going, it must not stop
        # the watchdog or an orderly shutdown.
        pass


class StopRequested(Exception):
    """Raised in the main thread by the signal handler: unwinds startup or serving cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:  # a second signal must not interrupt the orderly shutdown
        signal.signal(sig, signal.SIG_IGN)
    raise StopRequested(signum)


def wait_until(stop: threading.Event) -> None:
    # A timed wait keeps the main thread responsive to signals on every platform.
    while not stop.wait(0.5):
        pass


def read_manifest() -> dict[str, object]:
    obj = json.loads((RUNTIME_ROOT / "runtime.json").read_text(encoding="utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def parse_simulate(value: object) -> tuple[str | None, float | None]:
    """The start-time behaviour to simulate, and the delay before a crash after ready."""
    if value is None:
        return None, None
    if value in ("crash-at-start", "hang-at-start", "exit-clean-at-start"):
        return str(value), None
    if isinstance(value, str) and value.startswith("crash-after-ready:"):
        try:
            delay = float(value.partition(":")[2])
        except ValueError:
            delay = -1.0
        if math.isfinite(delay) and delay >= 0:
            return None, delay
    log(f"warning: ignoring unknown simulate value {value!r}")
    return None, None


def data_directory() -> Path:
    configured = os.environ.get("DESKTOP_RUNTIME_DATA")
    if configured:
        return Path(configured).expanduser().resolve()
    fallback = (Path.cwd() / "runtime-data").resolve()
    log(f"DESKTOP_RUNTIME_DATA is not set; keeping notes in {fallback}")
    return fallback


def crash_later(delay: float) -> None:
    def crash() -> None:
        log(f"simulated crash {delay:g}s after ready")
        os._exit(EXIT_SIMULATED_CRASH)

    timer = threading.Timer(delay, crash)
    timer.daemon = True
    timer.start()


def run(stop: threading.Event) -> int:
    try:
        manifest = read_manifest()
    except (OSError, ValueError) as exc:
        log(f"cannot read {RUNTIME_ROOT / 'runtime.json'}: {exc}")
        return EXIT_BAD_MANIFEST
    name = str(manifest.get("name") or PROG)
    version = str(manifest.get("version") or "0")

    watch_parent(os.environ.get("DESKTOP_RUNTIME_PARENT_PID"), stop, log)

    try:
        token, generated = LaunchToken.from_environment(os.environ)
    except TokenError as exc:
        log(str(exc))
        return EXIT_BAD_TOKEN

    at_start, crash_after = parse_simulate(manifest.get("simulate"))
    if at_start == "crash-at-start":
        log("simulated crash at start")
        return EXIT_SIMULATED_START_CRASH
    if at_start == "exit-clean-at-start":
        log("simulated clean exit at start")
        return EXIT_OK
    if at_start == "hang-at-start":
        log("simulated hang at start: never getting ready")
        wait_until(stop)
        return EXIT_OK

    # The shell says where native deps live: the version directory for a staged runtime,
    # its own resources/native for the bundled one.
    native_dir = os.environ.get("DESKTOP_NATIVE_DIR")
    library = library_file(Path(native_dir) if native_dir else RUNTIME_ROOT)
    try:
        stats = TextStats(library)
    except NativeMissing as exc:
        log(f"native dependency {NATIVE_NAME} missing: {exc}")
        return EXIT_NATIVE_MISSING

    data_dir = data_directory()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = NoteStore(data_dir, log)
    except OSError as exc:
        log(f"data directory {data_dir} is unusable: {exc}")
        return EXIT_DATA_DIR

    info = AppInfo(name=name, version=version,
                   shell_version=os.environ.get("DESKTOP_SHELL_VERSION") or "unknown", data_dir=data_dir)
    try:
        server = NotesServer(info, store, stats, token)
    except OSError as exc:
        log(f"cannot listen on 127.0.0.1: {exc}")
        return EXIT_LISTEN
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                               name="http", daemon=True)
    try:
        serving.start()
        if stop.is_set():
            return EXIT_OK
        ready = {"ready": True, "url": server.url, "version": version, "pid": os.getpid()}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        log(f"{name} {version} serving {server.url} (notes in {data_dir})")
        if generated:
            log(f"{TOKEN_ENV} is not set; to use the notes in a browser open {server.login_url}")
        if crash_after is not None:
            crash_later(crash_after)
        wait_until(stop)
        return EXIT_OK
    finally:
        if serving.is_alive():  # shutdown() waits for serve_forever, so only when it runs
            server.shutdown()
        server.server_close()


def main() -> int:
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)
    try:
        return run(stop)
    except StopRequested as exc:
        log(f"stopped by {exc}")
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
