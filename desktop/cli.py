"""The headless command line (contract in DESIGN.md): exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from desktop import __version__
from desktop.core import runmode
from desktop.core.config import REGISTRY_KINDS, AppConfig, load_config
from desktop.core.errors import DesktopError
from desktop.core.failures import FailureMemory
from desktop.core.state import BadVersions, read_pointer
from desktop.core.versions import parse_version

log = logging.getLogger("desktop")

Handler = Callable[[argparse.Namespace, AppConfig], dict[str, Any]]


class CommandFailed(DesktopError):
    """A command finished with a failure it already described."""


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after the command name."""
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir", default=default, help="data directory (default: per-user)")
    parser.add_argument("--registry", default=default, help="registry URL")
    parser.add_argument("--registry-kind", choices=REGISTRY_KINDS, default=default)
    parser.add_argument("--channel", default=default, help="channel (npm: dist-tag)")
    parser.add_argument("--public-key", default=default, help="feed root key, or the path of a .pub file")
    parser.add_argument("--json", action="store_true", default=default if suppress else False,
                        help="print one JSON object on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", default=default if suppress else False)
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common(suppress=True)
    parser = argparse.ArgumentParser(prog="desktop", parents=[_common(suppress=False)],
                                     description="Run, update and protect the embedded runtime.")
    parser.add_argument("--version", action="version", version=f"desktop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add("status", cmd_status, "pointer, running source, bad versions, last check")
    for name, handler, text in (("check", cmd_check, "ask the registry; report the newest usable version"),
                                ("update", cmd_update, "check and stage; progress on stderr")):
        command = add(name, handler, text)
        command.add_argument("--bypass-rollout", action="store_true",
                             help="a manual check: ignore phased-rollout percentages")
    bad = add("bad", cmd_bad, "list or clear bad versions")
    bad.add_argument("action", choices=("list", "clear"))
    bad.add_argument("target", nargs="?", metavar="VERSION")
    add("gc", cmd_gc, "remove unreferenced old versions and stale partials")
    launch = add("launch", cmd_launch, "start the runtime from the pointer with the launch rules, no GUI")
    launch.add_argument("--until-ready", action="store_true",
                        help="print the ready line's JSON and stop the runtime")
    launch.add_argument("--startup-timeout", type=float, default=None, metavar="SECONDS",
                        help="seconds to wait for the ready line (default 30)")
    keygen = add("keygen", cmd_keygen, "create an ed25519 signing key pair for a feed")
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key file (public key: FILE.pub)")
    publish = add("publish", cmd_publish, "pack a runtime directory and add it to a static feed")
    publish.add_argument("runtime_dir", nargs="?", metavar="RUNTIME_DIR")
    publish.add_argument("--feed", required=True, metavar="DIR", help="the feed directory to serve")
    publish.add_argument("--key", metavar="FILE", help="signing key (default: the publisher key in the "
                         "user config dir, created on first use)")
    publish.add_argument("--rollout", type=float, default=100.0, metavar="PERCENT")
    notes = publish.add_mutually_exclusive_group()
    notes.add_argument("--notes", default="", metavar="TEXT", help="release notes")
    notes.add_argument("--notes-file", metavar="F")
    publish.add_argument("--format", choices=("tar.gz", "zip", "7z"), default="tar.gz")
    publish.add_argument("--refresh", action="store_true",
                         help="re-sign snapshot and timestamp so the feed does not expire")
    publish.add_argument("--rotate-root", metavar="NEW_KEY",
                         help="hand every role to NEW_KEY (a new root signed by both keys)")
    run = add("run", cmd_run, "start the app (the default command)")
    demo = add("demo", cmd_demo, "start the app on a local demo feed: update, restart, crash, fall back")
    for command in (run, demo):
        command.add_argument("--startup-timeout", type=float, default=None, metavar="SECONDS")
        command.add_argument("--headless", action="store_true", help="no window: run the runtime in the foreground")
        command.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window at exit")
        command.add_argument("--exit-after", type=float, metavar="SECONDS", help="quit after SECONDS")
    demo.add_argument("--check-interval", type=float, default=20.0, metavar="SECONDS")
    add("rollback", cmd_rollback, "pointer back to the previous known-good or bundled runtime")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if runmode.requested(args_in):  # the frozen app as `{python}`: see desktop/core/runmode.py
        return runmode.run_runtime(args_in[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO if args.verbose else logging.WARNING)
    stderr.setFormatter(logging.Formatter("desktop: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[stderr])
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # `desktop` alone is what a double-click runs.
        args = parser.parse_args([*(argv or sys.argv[1:]), "run"])
        handler = args.handler
    try:
        config = load_config(data_dir=args.data_dir, registry=args.registry,
                             registry_kind=args.registry_kind, channel=args.channel,
                             public_key=args.public_key,
                             startup_timeout=getattr(args, "startup_timeout", None))
        result = handler(args, config)
    except CommandFailed as exc:
        print(f"desktop: {exc}", file=sys.stderr)
        return 1
    except DesktopError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"desktop: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("desktop: interrupted", file=sys.stderr)
        return 130
    _emit(args, result)
    return 0


def _emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    text = result.pop("_text", None)
    if result.pop("_quiet", False):
        return
    if args.json:
        print(json.dumps(result, sort_keys=True))
    elif text:
        print(text)


def _fail(args: argparse.Namespace, result: dict[str, Any], message: str) -> CommandFailed:
    if args.json:
        result.pop("_text", None)
        print(json.dumps(result, sort_keys=True))
    return CommandFailed(message)


def cmd_status(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from desktop.core.selection import resolve_target
    from desktop.core.updater import last_check

    target = resolve_target(config, repair=False)
    pointer = read_pointer(config.data.pointer_file)
    bad = BadVersions(config.data.bad_file).load()
    memory = FailureMemory(config.data.failures_file)
    transient = memory.transient()
    check = last_check(config)
    running = _running_now(config)
    result: dict[str, Any] = {
        "running": running,
        "version": str(target.version),
        "source": target.source,
        "reason": target.reason,
        "directory": str(target.directory),
        "shell_version": config.shell_version,
        "data_dir": str(config.data.root),
        "pointer": pointer.to_json() if pointer else None,
        "bad": {str(v): e.to_json() for v, e in bad.items()},
        "last_check": check,
        "failures": {
            "pinned": {str(v): {"reason": p.reason, "artefact": p.artefact, "time": p.time}
                       for v, p in memory.pinned().items()},
            "transient": None if transient is None else {
                "count": transient.count, "last_error": transient.last_error,
                "next_retry": transient.next_retry},
        },
    }
    lines = [f"runtime: {target.version} ({target.source}) — {target.reason}",
             f"running now: {running['version']} ({running['source']}) at {running.get('url')}" if running
             else "running now: no shell is running",
             f"pointer: {pointer.version if pointer else 'none'}"
             + (" (known-good)" if pointer and pointer.known_good else ""),
             f"data dir: {config.data.root}"]
    if check:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(check.get("time", 0))))
        lines.append(f"last check: {when} {check.get('result')}"
                     + (f" ({check['error']})" if check.get("error") else ""))
    for version, entry in bad.items():
        lines.append(f"bad: {version} — {entry.reason}")
    for version, pinned in memory.pinned().items():
        lines.append(f"failed validation: {version} — {pinned.reason}")
    if transient:
        lines.append(f"retrying after {transient.count} transient failure(s): {transient.last_error}")
    result["_text"] = "\n".join(lines)
    return result


def _running_now(config: AppConfig) -> dict[str, Any] | None:
    """What a live shell process is running right now, if any."""
    from desktop.core.gc import running_info

    info = running_info(config)
    return {k: info.get(k) for k in ("version", "source", "pid", "url", "shell_pid")} if info else None


def cmd_check(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from desktop.core.updater import check

    result = check(config.with_overrides(manual_check=args.bypass_rollout))
    available = str(result.available.version) if result.available else None
    return {
        "available": available,
        "current": str(result.current),
        "channel": config.channel,
        "offered": [str(r.version) for r in result.offered],
        "skipped": [{"version": str(s.version), "reason": s.reason} for s in result.skipped],
        "not_modified": result.not_modified,
        "notes": result.available.notes if result.available else None,
        "_text": f"update available: {available}" if available else f"up to date ({result.current})",
    }


def cmd_update(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from desktop.core.stager import StageOutcome
    from desktop.core.updater import update

    progress = ProgressPrinter()
    outcome = update(config.with_overrides(manual_check=args.bypass_rollout), progress=progress)
    progress.finish()
    version = str(outcome.version) if outcome.version else None
    result: dict[str, Any] = {"outcome": outcome.outcome.value, "version": version,
                              "downloaded": outcome.downloaded}
    if outcome.outcome is StageOutcome.FAILED:
        result["error"] = str(outcome.error)
        raise _fail(args, result, f"update failed: {outcome.error}")
    texts = {
        StageOutcome.STAGED: f"staged {version}; it runs at the next start",
        StageOutcome.ALREADY_STAGED: f"{version} is already staged",
        StageOutcome.UP_TO_DATE: f"up to date ({version})",
        StageOutcome.BAD_VERSION: f"the newest version {version} is marked bad; not staging it",
        StageOutcome.BUSY: "another process is staging; try again later",
    }
    result["_text"] = texts.get(outcome.outcome, outcome.outcome.value)
    return result


def cmd_bad(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    bad = BadVersions(config.data.bad_file)
    if args.action == "list":
        entries = bad.load()
        return {"bad": {str(v): e.to_json() for v, e in entries.items()},
                "_text": "\n".join(f"{v}: {e.reason}" for v, e in entries.items()) or "no bad versions"}
    version = None
    if args.target is not None:
        version = parse_version(args.target)
        if version is None:
            raise CommandFailed(f"{args.target!r} is not a valid version")
    cleared = bad.clear(version)
    FailureMemory(config.data.failures_file).clear(version)
    names = [str(v) for v in cleared]
    return {"cleared": names, "_text": f"cleared {', '.join(names)}" if names else "nothing to clear"}


def cmd_gc(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from desktop.core.gc import collect
    from desktop.core.stager import Busy

    try:
        result = collect(config)
    except Busy:
        raise CommandFailed("another process is staging; try gc again later") from None
    return {"removed": list(result.removed), "kept": list(result.kept),
            "_text": f"removed {len(result.removed)} entries; kept {', '.join(result.kept) or 'none'}"}


def cmd_launch(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    import signal
    import threading

    from desktop.core.supervisor import RuntimeState, Supervisor

    supervisor = Supervisor(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        supervisor.stop()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        running = supervisor.start()
        result = running.to_json()
        if supervisor.failures:
            result["fallbacks"] = [{"version": str(f.version), "reason": f.outcome.reason,
                                    "fallback": str(f.fallback.version)} for f in supervisor.failures]
        for failure in supervisor.failures:
            print(f"desktop: {failure.version} failed to start ({failure.outcome.reason}); "
                  f"marked bad, fell back to {failure.fallback.version}", file=sys.stderr)
        if args.until_ready:
            # Answer as soon as the runtime is ready; stopping it happens after (in `finally`).
            print(json.dumps(result, sort_keys=True) if args.json else json.dumps(running.to_json()), flush=True)
            return {"_quiet": True}
        print(json.dumps(result, sort_keys=True) if args.json
              else f"runtime {running.target.version} ({running.target.source}) ready at {running.ready.get('url')}",
              flush=True)
        supervisor.add_listener(lambda state, info: stop.set() if state is RuntimeState.FAILED else None)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        if supervisor.state is RuntimeState.FAILED:
            raise CommandFailed(supervisor.last_error or "the runtime failed")
        return {"_quiet": True}
    finally:
        supervisor.stop()
        signal.signal(signal.SIGTERM, previous)


def cmd_keygen(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from pathlib import Path

    from desktop.core.keys import generate

    pair = generate(Path(args.out))
    return {"public_key": pair.public, "private_key_file": str(pair.private_path),
            "public_key_file": str(pair.public_path), "_text": pair.public}


def _publisher_key(args: argparse.Namespace) -> Any:
    import os
    from pathlib import Path

    import platformdirs

    from desktop.core.keys import generate, load_signer

    if args.key:
        return load_signer(Path(args.key))
    env = os.environ.get("DESKTOP_SIGNING_KEY")
    path = Path(env) if env else Path(platformdirs.user_config_dir("desktop-shell", appauthor=False)) / "feed.key"
    if not path.exists():
        pair = generate(path)
        print(f"desktop: created signing key {path}; its public key is {pair.public}", file=sys.stderr)
    return load_signer(path)


def cmd_publish(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from pathlib import Path

    from desktop.core.feedrepo import FeedRepository
    from desktop.core.keys import load_signer, public_of

    repo = FeedRepository(Path(args.feed))
    signer = _publisher_key(args)
    if args.rotate_root:
        new = load_signer(Path(args.rotate_root))
        version = repo.rotate_root(signer, new)
        return {"root_version": version, "public_key": public_of(new),
                "_text": f"root v{version} now trusts {public_of(new)}"}
    if args.refresh:
        version = repo.refresh(signer)
        return {"timestamp_version": version, "_text": f"re-signed; timestamp v{version}"}
    if not args.runtime_dir:
        raise CommandFailed("publish needs RUNTIME_DIR (or --refresh / --rotate-root)")
    notes = args.notes
    if args.notes_file:
        try:
            notes = Path(args.notes_file).read_text()
        except OSError as exc:
            raise CommandFailed(f"cannot read {args.notes_file}: {exc.strerror}") from None
    done = repo.publish(Path(args.runtime_dir), signer, channel=args.channel or "stable", rollout=args.rollout,
                        notes=notes, fmt=args.format)
    verb = "already published" if done.unchanged else "published"
    return {"name": done.name, "version": done.version, "channel": done.channel, "rollout": done.rollout,
            "sha256": done.sha256, "length": done.length, "unchanged": done.unchanged,
            "public_key": public_of(signer),
            "_text": f"{verb} {done.version} ({done.channel}, {done.rollout:g}%) as {done.name}"}


def cmd_run(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    if args.headless:
        args.until_ready = False
        return cmd_launch(args, config)
    from pathlib import Path

    from desktop.ui.app import run_gui

    code = run_gui(config, screenshot=Path(args.screenshot) if args.screenshot else None,
                   exit_after_s=args.exit_after)
    if code:
        raise CommandFailed(f"the app exited with code {code}")
    return {"_quiet": True}


def cmd_demo(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    """A local signed feed with a good and a crashing release, and the app pointed at it."""
    from dataclasses import replace
    from pathlib import Path

    import platformdirs

    from desktop.core.paths import DataDir
    from desktop.demo import DemoFeed

    root = Path(args.data_dir) if args.data_dir else Path(
        platformdirs.user_data_dir("desktop-shell", appauthor=False)) / "demo"
    feed = DemoFeed(root / "publisher").start(fresh=True)
    data = DataDir(root / "data")
    if data.root.exists():
        import shutil

        shutil.rmtree(data.root)
    feed.publish_good()
    settings = replace(config.settings, check_interval_s=args.check_interval, auto_update=True)
    demo_config = replace(config, data=data, registry_url=feed.url, registry_kind="feed",
                          public_key=feed.public_key, channel="stable", settings=settings)
    if args.startup_timeout is not None:
        demo_config = replace(demo_config, startup_timeout=args.startup_timeout)
    print(f"desktop: demo feed at {feed.url} (data in {data.root})", file=sys.stderr)
    if args.headless:
        feed.stop()
        raise CommandFailed("the demo needs the window; run it without --headless")
    from desktop.ui.app import run_gui

    code = run_gui(demo_config, demo=feed, initial_delay_s=3.0,
                   screenshot=Path(args.screenshot) if args.screenshot else None, exit_after_s=args.exit_after)
    if code:
        raise CommandFailed(f"the app exited with code {code}")
    return {"_quiet": True}


def cmd_rollback(args: argparse.Namespace, config: AppConfig) -> dict[str, Any]:
    from desktop.core.selection import rollback

    done = rollback(config)
    return {"rolled_back": str(done.from_version), "version": str(done.to.version), "source": done.to.source,
            "_text": f"rolled back from {done.from_version} to {done.to.version} ({done.to.source})"}


class ProgressPrinter:
    """Progress of a stage on stderr: a bar on a terminal, a line per step otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_phase = ""
        self.last_decile = -1
        self.dirty = False

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.last_phase:
            self.finish()
            self.last_phase, self.last_decile = phase, -1
            if not self.tty:
                print(f"{phase}...", file=sys.stderr, flush=True)
        if total:
            pct = min(100, done * 100 // max(total, 1))
            if self.tty:
                bar = "#" * (pct // 4)
                print(f"\r{phase:<9} [{bar:<25}] {pct:3d}% {done / 1048576:.1f} MB",
                      end="", file=sys.stderr, flush=True)
                self.dirty = True
            elif pct // 10 > self.last_decile:
                self.last_decile = pct // 10
                print(f"{phase} {pct}% ({done} of {total} bytes)", file=sys.stderr, flush=True)
        elif self.tty:
            print(f"\r{phase:<9} {done / 1048576:.1f} MB", end="", file=sys.stderr, flush=True)
            self.dirty = True

    def finish(self) -> None:
        if self.dirty:
            print(file=sys.stderr, flush=True)
            self.dirty = False
