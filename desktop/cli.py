"""The headless command line (contract in DESIGN.md): parse, one call to the core, render.

Exit 0 on success, 1 on a failure (one line on stderr), 2 on bad usage. With --json every
command prints exactly one JSON object on stdout, also when it fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from desktop import __version__
from desktop.core import runmode
from desktop.core.errors import DesktopError, UsageError
from desktop.core.results import (
    Crashed,
    Failed,
    Phase,
    PolicyInfo,
    Progress,
    Running,
    RuntimeEvent,
    ShellInfo,
    ShellUpdateReport,
    StartFailed,
    Stopped,
    UpdateOutcome,
    UpdateReport,
)
from desktop.core.shell import Shell
from desktop.core.text import RedactingFilter, mb, one_line

log = logging.getLogger("desktop")

Handler = Callable[[argparse.Namespace], "Rendered"]
REGISTRY_KINDS = ("feed", "npm")


class Rendered:
    """What a command prints: a JSON object (with --json) or text."""

    def __init__(self, obj: dict[str, Any], text: str | None = None, *, printed: bool = False,
                 exit_code: int = 0) -> None:
        self.obj = obj
        self.text = text
        self.printed = printed
        self.exit_code = exit_code


class CommandFailed(DesktopError):
    """A command failed; `obj` is what --json prints (it always carries "error"); `printed` when the
    command's one JSON object is already out (a launch that ran, then failed)."""

    def __init__(self, message: str, obj: dict[str, Any] | None = None, *, printed: bool = False) -> None:
        super().__init__(message)
        self.obj = {**(obj or {}), "error": message}
        self.printed = printed


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        Shell.report_healthy()  # a usage error is the user's, not a broken shell's
        self.print_usage(sys.stderr)
        print(f"desktop: error: {message}", file=sys.stderr)
        if "--json" in sys.argv:
            print(json.dumps({"error": f"usage: {message}"}))
        sys.exit(2)


def _common(suppress: bool) -> _Parser:
    """Options every command takes, before or after the command name."""
    default = argparse.SUPPRESS if suppress else None
    parser = _Parser(add_help=False)
    parser.add_argument("--data-dir", default=default, help="data directory (default: per-user)")
    parser.add_argument("--registry", default=default, help="registry URL")
    parser.add_argument("--registry-kind", choices=REGISTRY_KINDS, default=default)
    parser.add_argument("--channel", default=default, help="channel (npm: dist-tag)")
    parser.add_argument("--public-key", default=default, help="feed key for a feed's first root (or a .pub file)")
    parser.add_argument("--trusted-root", default=default, metavar="FILE",
                        help="bootstrap feed trust from this TUF root.json instead of the shipped one")
    parser.add_argument("--json", action="store_true", default=default if suppress else False,
                        help="print one JSON object on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", default=default if suppress else False)
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common(suppress=True)
    parser = _Parser(prog="desktop", parents=[_common(suppress=False)],
                     description="Run, update and protect the embedded runtime.")
    parser.add_argument("--version", action="version", version=f"desktop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    status = add("status", cmd_status, "pointer, running source, bad versions, last check")
    status.add_argument("--feed", metavar="DIR", help="instead: the state of the feed a publisher writes")
    for name, handler, text in (("check", cmd_check, "ask the registry; report the newest usable version"),
                                ("update", cmd_update, "check and stage; progress on stderr")):
        command = add(name, handler, text)
        command.add_argument("--bypass-rollout", action="store_true",
                             help="a manual check: ignore phased-rollout percentages")
        if name == "update":
            command.set_defaults(failure_fields={"outcome": "failed"})
    bad = add("bad", cmd_bad, "list or clear bad versions")
    bad.add_argument("action", choices=("list", "clear"))
    bad.add_argument("target", nargs="?", metavar="VERSION")
    add("gc", cmd_gc, "remove unreferenced old versions and stale partials")
    launch = add("launch", cmd_launch, "start the runtime from the pointer with the launch rules, no GUI")
    launch.add_argument("--until-ready", action="store_true",
                        help="print the ready line's JSON and stop the runtime")
    launch.add_argument("--startup-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="seconds to wait for the ready line (default 30)")
    keygen = add("keygen", cmd_keygen, "create an ed25519 signing key pair for a feed")
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key file (public key: FILE.pub)")
    publish = add("publish", cmd_publish, "pack a runtime directory and add it to a static feed")
    publish.add_argument("runtime_dir", nargs="?", metavar="RUNTIME_DIR")
    publish.add_argument("--feed", required=True, metavar="DIR", help="the feed directory to serve")
    publish.add_argument("--key", action="append", default=[], metavar="FILE",
                         help="signing key (repeat for several signers); never invented")
    publish.add_argument("--threshold", action="append", default=[], metavar="N|ROLE=N",
                         help="signatures a role needs (when creating the feed or rotating the root)")
    publish.add_argument("--rollout", type=float, default=100.0, metavar="PERCENT")
    notes = publish.add_mutually_exclusive_group()
    notes.add_argument("--notes", default="", metavar="TEXT", help="release notes")
    notes.add_argument("--notes-file", metavar="F")
    publish.add_argument("--format", choices=("tar.gz", "zip", "7z"), default="tar.gz")
    action = publish.add_mutually_exclusive_group()
    action.add_argument("--refresh", action="store_true",
                        help="re-sign the metadata that expires soon so the feed does not expire")
    action.add_argument("--rotate-root", action="append", default=[], metavar="NEW_KEY",
                        help="hand the roles to NEW_KEY (repeatable): a new root signed by the old and new keys")
    action.add_argument("--export-root", metavar="FILE", help="write the feed's current trusted root.json")
    run = add("run", cmd_run, "start the app (the default command)")
    demo = add("demo", cmd_demo, "start the app on a local demo feed: update, restart, crash, fall back")
    for command in (run, demo):
        command.add_argument("--startup-timeout", type=_seconds, default=None, metavar="SECONDS")
        command.add_argument("--headless", action="store_true", help="no window: run the runtime in the foreground")
        command.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window at exit")
        command.add_argument("--exit-after", type=_seconds, metavar="SECONDS", help="quit after SECONDS")
    demo.add_argument("--check-interval", type=_seconds, default=20.0, metavar="SECONDS")
    add("rollback", cmd_rollback, "pointer back to the previous known-good or bundled runtime")
    bad.add_argument("--shell", action="store_true", help="the app's own shells (per-user install) instead")
    shell_publish = add("publish-shell", cmd_publish_shell,
                        "add a frozen build of the app (a directory or an archive of one) to a static feed")
    shell_publish.add_argument("build", metavar="BUILD")
    shell_publish.add_argument("--feed", required=True, metavar="DIR", help="the feed directory to serve")
    shell_publish.add_argument("--key", action="append", default=[], metavar="FILE",
                               help="signing key (repeat for several signers); never invented")
    shell_publish.add_argument("--rollout", type=float, default=100.0, metavar="PERCENT")
    shell_publish.add_argument("--platform", metavar="TAG", help="refuse a build for another platform (linux-x86_64)")
    shell_publish.add_argument("--notes", default="", metavar="TEXT", help="release notes")
    shell_publish.add_argument("--format", choices=("tar.gz", "zip"), default="tar.gz",
                               help="archive format when BUILD is a directory")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds greater than 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if runmode.requested(args_in):  # the frozen app as `{python}` or guardian: see desktop/core/runmode.py
        return runmode.dispatch(args_in)
    # Everything the shell writes is the user's alone (logs, state, downloads).
    os.umask(0o077)
    # The launcher's health mark is this process's to write; no child may inherit it.
    from desktop.core.install.health import take_from_environment

    take_from_environment()
    parser = build_parser()
    args = parser.parse_args(args_in)
    _setup_logging(args.verbose)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # `desktop` alone is what a double-click runs.
        args = parser.parse_args([*args_in, "run"])
        handler = args.handler
        assert handler is not None
    fields: dict[str, Any] = dict(getattr(args, "failure_fields", {}))
    try:
        rendered = handler(args)
    except CommandFailed as exc:
        if exc.printed:
            args.json = False  # the one JSON object is already out
        return _failed(args, str(exc), {**fields, **exc.obj}, 1)
    except UsageError as exc:
        return _failed(args, str(exc), fields, 2)
    except DesktopError as exc:
        return _failed(args, str(exc), fields, 1)
    except OSError as exc:
        return _failed(args, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), fields, 1)
    except KeyboardInterrupt:
        return _failed(args, "interrupted", fields, 1)
    if not rendered.printed:
        if args.json:
            print(json.dumps(rendered.obj, sort_keys=True, ensure_ascii=False))
        elif rendered.text:
            print(rendered.text)
    return rendered.exit_code


def _failed(args: argparse.Namespace, message: str, obj: dict[str, Any], code: int) -> int:
    Shell.report_healthy()  # an expected failure, handled: the shell itself works
    text = one_line(message, 1000)
    if getattr(args, "json", False):
        print(json.dumps({**obj, "error": text}, sort_keys=True, ensure_ascii=False))
    print(f"desktop: {text}", file=sys.stderr)
    return code


def _setup_logging(verbose: bool) -> None:
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    stderr.setFormatter(logging.Formatter("desktop: %(levelname)s: %(message)s"))
    stderr.addFilter(RedactingFilter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[stderr])


def open_shell(args: argparse.Namespace, *, tolerate_unwritable: bool = False, healthy: bool = True) -> Shell:
    shell = Shell.open(data_dir=args.data_dir, registry=args.registry, registry_kind=args.registry_kind,
                       channel=args.channel, public_key=args.public_key, trusted_root=args.trusted_root,
                       startup_timeout=getattr(args, "startup_timeout", None),
                       tolerate_unwritable=tolerate_unwritable)
    if healthy:
        # The command is reached: the interpreter, the imports and the configuration work. What
        # the command does next (an update that fails offline) is not the shell's fault.
        shell.report_healthy()
    return shell


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"


# -- commands --------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> Rendered:
    if args.feed:
        return feed_status(args)
    shell = open_shell(args)
    s = shell.status()
    obj: dict[str, Any] = {
        "version": str(s.version), "source": s.source, "reason": s.reason, "directory": s.directory,
        "shell_version": s.shell_version, "data_dir": s.data_dir, "pointer": s.pointer,
        "registry": s.registry, "channel": s.channel,
        "running": [{"shell_pid": r.shell_pid, "version": str(r.version), "source": r.source, "state": r.state,
                     "url": r.url} for r in s.running],
        "bad": {str(b.version): {"reason": b.reason, "exit_code": b.exit_code, "stderr_tail": list(b.stderr_tail),
                                 "time": b.time} for b in s.bad},
        "bad_list_unreadable": s.bad_list_unknown,
        "blocked": [{"version": str(b.version), "store": b.store, "reason": b.reason, "time": b.time}
                    for b in s.blocked],
        "last_check": None if s.last_check is None else {
            "time": s.last_check.time, "result": s.last_check.result, "available": s.last_check.available,
            "error": s.last_check.error},
        "failures": {"transient": None if s.transient is None else {
            "count": s.transient.count, "last_error": s.transient.last_error, "next_retry": s.transient.next_retry}},
    }
    app = shell.shell_info()
    policy = shell.policy_info()
    obj["shell"] = shell_info_json(app)
    obj["policy"] = policy_json(policy)
    lines = [f"runtime: {s.version} ({s.source}) — {s.reason}"]
    lines += [f"running now: {r.version} ({r.source}, {r.state}) in shell {r.shell_pid}"
              + (f" at {r.url}" if r.url else "") for r in s.running] or ["running now: no shell is running"]
    pointer = s.pointer
    lines.append(f"pointer: {pointer['version']}" + (" (known-good)" if pointer.get("known_good") else "")
                 if pointer else "pointer: none")
    lines.append(f"data dir: {s.data_dir}")
    lines.append(f"registry: {s.registry or 'none'} (channel {s.channel})")
    if s.last_check:
        lines.append(f"last check: {_when(s.last_check.time)} {s.last_check.result}"
                     + (f" ({s.last_check.error})" if s.last_check.error else ""))
    if s.bad_list_unknown:
        lines.append("bad list: unreadable — every staged version but the last known-good is treated as bad")
    lines += [f"bad: {b.version} — {b.reason}" for b in s.bad]
    lines += [f"{b.store}: {b.version} — {b.reason}" for b in s.blocked if b.store != "skipped by the user"]
    lines += [f"skipped: {b.version}" for b in s.blocked if b.store == "skipped by the user"]
    if s.transient:
        lines.append(f"retrying after {s.transient.count} transient failure(s) at {_when(s.transient.next_retry)}: "
                     f"{s.transient.last_error}")
    lines.append(f"app: {app.version}" + (f" (installed {app.installed})" if app.installed else "")
                 + (f"; {app.pending} runs at the next start" if app.pending else "")
                 + (f"; updates of the app: {app.updates.value}" + (f" — {app.reason}" if app.reason else "")))
    lines += [f"bad app version: {b.version} — {b.reason}" for b in app.bad]
    if policy.in_force:
        lines.append(policy.text)
    return Rendered(obj, "\n".join(lines))


def cmd_check(args: argparse.Namespace) -> Rendered:
    shell = open_shell(args)
    shell_channel = shell.config.channel
    report = shell.check(bypass_rollout=args.bypass_rollout)
    available = str(report.available.version) if report.available else None
    obj = {
        "available": available,
        "current": str(report.current),
        "channel": args.channel or shell_channel,
        "offered": [str(r.version) for r in report.offered],
        "skipped": [{"version": str(s.version), "reason": s.reason.value, "detail": s.detail}
                    for s in report.skipped],
        "not_modified": report.not_modified,
        "notes": report.available.notes if report.available else None,
    }
    return Rendered(obj, f"update available: {available}" if available else f"up to date ({report.current})")


def cmd_update(args: argparse.Namespace) -> Rendered:
    shell = open_shell(args)
    printer = ProgressPrinter()
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if stopping:
            raise KeyboardInterrupt  # a second signal: do not wait for a stalled read
        stopping.append(signum)

    handled = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        app = shell.update_app(progress=printer, bypass_rollout=args.bypass_rollout, cancel=lambda: bool(stopping))
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    printer.finish()
    report = app.runtime
    obj = update_json(report)
    obj["shell"] = shell_update_json(app.shell)
    # "bytes received by this run": the app's own update counts too (its part is under "shell").
    obj["bytes_downloaded"] += app.shell.bytes_downloaded
    obj["downloaded"] = obj["bytes_downloaded"] > 0
    if app.shell.outcome is UpdateOutcome.FAILED and app.shell.error is not None:
        # The runtime's outcome is what `update` reports; the app's own update is retried next time.
        print(f"desktop: updating the app itself failed: {one_line(str(app.shell.error))}", file=sys.stderr)
    version = obj["version"]
    if report.outcome in (UpdateOutcome.FAILED, UpdateOutcome.CANCELLED):
        raise CommandFailed(f"update failed: {one_line(str(report.error))}", obj)
    texts = {
        UpdateOutcome.STAGED: f"staged {version}; it runs at the next start",
        UpdateOutcome.ALREADY_STAGED: f"{version} is already staged",
        UpdateOutcome.UP_TO_DATE: f"up to date ({version})",
        UpdateOutcome.BAD_VERSION: f"the newest version {version} is marked bad; not staging it",
        UpdateOutcome.BUSY: "another process is staging; try again later",
        UpdateOutcome.DISABLED: "runtime updates are turned off by policy",
    }
    text = texts.get(report.outcome, report.outcome.value)
    if app.shell.outcome is UpdateOutcome.STAGED:
        text += f"\napp {app.shell.version} staged; it runs at the next start of the app"
    elif app.shell.outcome is UpdateOutcome.ALREADY_STAGED:
        text += f"\napp {app.shell.version} is staged; it runs at the next start of the app"
    return Rendered(obj, text)


def shell_update_json(report: ShellUpdateReport) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "outcome": report.outcome.value,
        "version": str(report.version) if report.version else None,
        "updates": report.updates.value,
        "reason": report.reason,
        "needed_by": str(report.needed_by) if report.needed_by else None,
        "bytes_downloaded": report.bytes_downloaded,
        "delta": report.delta,
        "restart_exit_code": report.restart_exit_code,
        "skipped": [{"version": str(s.version), "reason": s.reason.value, "detail": s.detail}
                    for s in report.skipped],
    }
    if report.error is not None:
        obj["error"] = one_line(str(report.error), 1000)
        obj["failure"] = report.failure.value if report.failure else None
        obj["pinned"] = report.pinned
    return obj


def shell_info_json(info: ShellInfo) -> dict[str, Any]:
    return {
        "version": info.version, "updates": info.updates.value, "reason": info.reason,
        "install_root": info.install_root, "installed": str(info.installed) if info.installed else None,
        "pointer": info.pointer, "pending": str(info.pending) if info.pending else None,
        "restart_exit_code": info.restart_exit_code,
        "bad": {str(b.version): {"reason": b.reason, "exit_code": b.exit_code, "stderr_tail": list(b.stderr_tail),
                                 "time": b.time} for b in info.bad},
    }


def policy_json(policy: PolicyInfo) -> dict[str, Any]:
    return {"in_force": policy.in_force, "text": policy.text, "shell_updates": policy.shell_updates,
            "runtime_updates": policy.runtime_updates, "channel": policy.channel,
            "runtime_versions": policy.runtime_versions, "shell_versions": policy.shell_versions,
            "feed": policy.feed, "sources": list(policy.sources), "problems": list(policy.problems)}


def update_json(report: UpdateReport) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "outcome": "failed" if report.outcome is UpdateOutcome.CANCELLED else report.outcome.value,
        "version": str(report.version) if report.version else None,
        "bytes_downloaded": report.bytes_downloaded,
        "downloaded": report.bytes_downloaded > 0,
        "delta": report.delta,
    }
    if report.error is not None:
        obj["error"] = one_line(str(report.error), 1000)
        obj["failure"] = report.failure.value if report.failure else None
        obj["pinned"] = report.pinned
    return obj


def cmd_bad(args: argparse.Namespace) -> Rendered:
    shell = open_shell(args)
    if args.shell:
        if args.action == "list":
            entries = shell.shell_info().bad
            return Rendered({"bad": {str(e.version): {"reason": e.reason, "exit_code": e.exit_code,
                                                      "stderr_tail": list(e.stderr_tail), "time": e.time}
                                     for e in entries}},
                            "\n".join(f"{e.version}: {e.reason}" for e in entries) or "no bad app versions")
        cleared = shell.clear_bad_shell(args.target)
        return Rendered({"cleared": list(cleared)}, f"cleared {', '.join(cleared)}" if cleared else "nothing to clear")
    if args.action == "list":
        entries = shell.bad_versions()
        blocked = shell.blocked()
        obj = {"bad": {str(e.version): {"reason": e.reason, "exit_code": e.exit_code,
                                        "stderr_tail": list(e.stderr_tail), "time": e.time} for e in entries},
               "blocked": [{"version": str(b.version), "store": b.store, "reason": b.reason} for b in blocked]}
        lines = [f"{e.version}: {e.reason}" for e in entries] + [f"{b.version}: {b.store} ({b.reason})"
                                                                 for b in blocked]
        return Rendered(obj, "\n".join(lines) or "no bad versions")
    report = shell.clear_bad(args.target)
    obj = {"cleared": list(report.cleared), "stores": {k: list(v) for k, v in report.stores.items()}}
    return Rendered(obj, f"cleared {', '.join(report.cleared)}" if report.cleared else "nothing to clear")


def cmd_gc(args: argparse.Namespace) -> Rendered:
    report = open_shell(args).collect_garbage()
    obj = {"removed": list(report.removed), "kept": list(report.kept), "problems": list(report.problems)}
    text = f"removed {len(report.removed)} entries; kept {', '.join(report.kept) or 'none'}"
    if report.problems:
        text += "\n" + "\n".join(f"warning: {p}" for p in report.problems)
    return Rendered(obj, text)


def cmd_rollback(args: argparse.Namespace) -> Rendered:
    done = open_shell(args).rollback()
    return Rendered({"rolled_back": str(done.rolled_back), "version": str(done.version), "source": done.source},
                    f"rolled back from {done.rolled_back} to {done.version} ({done.source})")


def cmd_launch(args: argparse.Namespace) -> Rendered:
    """Start the runtime with the launch rules; SIGTERM, SIGINT and SIGHUP stop it promptly."""
    shell = open_shell(args, tolerate_unwritable=True)
    supervisor = shell.supervisor()
    # Plain lists, not Events: the signal handler must not take a lock the main thread may hold.
    ended: list[RuntimeEvent] = []
    signals: list[int] = []

    def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, StartFailed):
            what = "marked bad" if event.marked_bad else ("damaged on disk; it will be staged again"
                                                          if event.damaged else "could not be marked bad yet")
            print(f"desktop: {event.version} failed to start ({one_line(event.outcome.reason)}); {what}; "
                  f"falling back to {event.fallback} ({event.fallback_source})", file=sys.stderr, flush=True)
        elif isinstance(event, Crashed):
            print(f"desktop: runtime {event.version} crashed ({event.outcome.reason})"
                  + (f"; restarting in {event.restart_in:.1f} s" if event.restart_in is not None else ""),
                  file=sys.stderr, flush=True)
        elif isinstance(event, Failed | Stopped):
            ended.append(event)

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)
        supervisor.stop()

    supervisor.add_listener(on_event)
    handled = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        supervisor.start()
        event = supervisor.wait_settled()
        if signals or isinstance(event, Stopped):
            raise CommandFailed("start interrupted: the runtime was stopped before it was ready")
        if isinstance(event, Failed):
            raise CommandFailed(event.message.splitlines()[0])
        if not isinstance(event, Running):
            raise CommandFailed("the runtime did not start")
        result = event.to_json()
        if supervisor.failures:
            result["fallbacks"] = [{"version": str(f.version), "reason": f.outcome.reason,
                                    "fallback": str(f.fallback), "marked_bad": f.marked_bad}
                                   for f in supervisor.failures]
        if args.until_ready:
            # Answer as soon as the runtime is ready; stopping it happens after (in `finally`).
            print(json.dumps(result, sort_keys=True, ensure_ascii=False), flush=True)
            return Rendered(result, printed=True)
        print(json.dumps(result, sort_keys=True, ensure_ascii=False) if args.json
              else f"runtime {event.version} ({event.source}) ready at {event.url}", flush=True)
        while not ended and not signals:
            time.sleep(0.2)
        last = supervisor.last_event
        if not signals and isinstance(last, Failed):
            raise CommandFailed(last.message.splitlines()[0], printed=True)
        return Rendered(result, printed=True)
    finally:
        supervisor.close()
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_keygen(args: argparse.Namespace) -> Rendered:
    from desktop.core.publishing import Publisher

    Shell.report_healthy()
    pair = Publisher.keygen(Path(args.out))
    return Rendered({"public_key": pair.public, "private_key_file": str(pair.private_path),
                     "public_key_file": str(pair.public_path)}, pair.public)


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        print(f"desktop: {warning}", file=sys.stderr, flush=True)


def cmd_publish(args: argparse.Namespace) -> Rendered:
    from desktop.core.publishing import Publisher, parse_thresholds

    Shell.report_healthy()
    publisher = Publisher(Path(args.feed))
    keys = [Path(k) for k in args.key]
    thresholds = parse_thresholds(args.threshold)
    if args.export_root:
        root = publisher.export_root(Path(args.export_root))
        return Rendered({"path": str(root.path), "version": root.version, "expires": root.expires.isoformat(),
                         "keyids": list(root.keyids), "threshold": root.threshold, "sha256": root.sha256},
                        f"wrote root v{root.version} to {root.path}; ship it as resources/root.json")
    if args.rotate_root:
        rotated = publisher.rotate_root([Path(k) for k in args.rotate_root], keys, thresholds)
        _warn(rotated.warnings)
        return Rendered({"root_version": rotated.root_version,
                         "keyids": {r: list(k) for r, k in rotated.keyids.items()},
                         "thresholds": dict(rotated.thresholds), "resigned": list(rotated.resigned),
                         "warnings": list(rotated.warnings)},
                        f"root v{rotated.root_version} is live; ship it with the next app release "
                        f"(desktop publish --export-root FILE --feed {args.feed})")
    if thresholds is not None:
        raise UsageError("--threshold applies when a feed is created or its root rotated")
    if args.refresh:
        done = publisher.refresh(keys)
        _warn(done.warnings)
        return Rendered({"timestamp_version": done.timestamp_version, "root_version": done.root_version,
                         "renewed": list(done.renewed), "warnings": list(done.warnings),
                         "expiry": [_expiry_json(e) for e in done.expiry]},
                        f"re-signed {', '.join(done.renewed) or 'nothing'}; timestamp v{done.timestamp_version}")
    if not args.runtime_dir:
        raise UsageError("publish needs RUNTIME_DIR (or --refresh / --rotate-root / --export-root)")
    notes = args.notes
    if args.notes_file:
        try:
            notes = Path(args.notes_file).read_text()
        except OSError as exc:
            raise CommandFailed(f"cannot read {args.notes_file}: {exc.strerror}") from None
    done_ = publisher.publish(Path(args.runtime_dir), keys, channel=args.channel or "stable",
                              rollout=args.rollout, notes=notes, fmt=args.format)
    return _published(done_, "")


def _expiry_json(entry: Any) -> dict[str, Any]:
    return {"role": entry.role, "version": entry.version, "expires": entry.expires.isoformat(),
            "days_left": round(entry.days_left, 2), "needs_key": entry.needs_key, "threshold": entry.threshold,
            "keyids": list(entry.keyids)}


def feed_status(args: argparse.Namespace) -> Rendered:
    from desktop.core.publishing import Publisher

    Shell.report_healthy()
    status = Publisher(Path(args.feed)).status()
    _warn(status.warnings)
    lines = [f"feed {status.feed}: root v{status.root_version}, targets v{status.targets_version}, "
             f"snapshot v{status.snapshot_version}, timestamp v{status.timestamp_version}"]
    lines += [f"{e.role}: expires {e.expires:%Y-%m-%d} ({e.days_left:.0f} days), {e.threshold} of "
              f"{len(e.keyids)} key(s)" for e in status.expiry]
    lines += [f"release {r.get('version')} ({r.get('channel')}, {r.get('rollout')}%): {r.get('name')}"
              for r in status.releases]
    return Rendered({"feed": str(status.feed), "root_version": status.root_version,
                     "targets_version": status.targets_version, "snapshot_version": status.snapshot_version,
                     "timestamp_version": status.timestamp_version,
                     "expiry": [_expiry_json(e) for e in status.expiry],
                     "releases": [dict(r) for r in status.releases], "warnings": list(status.warnings)},
                    "\n".join(lines))


def cmd_run(args: argparse.Namespace) -> Rendered:
    if args.headless:
        args.until_ready = False
        return cmd_launch(args)
    from desktop.ui.app import run_gui

    shell = open_shell(args, tolerate_unwritable=True, healthy=False)
    code = run_gui(shell, screenshot=Path(args.screenshot) if args.screenshot else None,
                   exit_after_s=args.exit_after)
    info = shell.shell_info()
    if code and code == info.restart_exit_code:
        return Rendered({}, printed=True, exit_code=code)  # "Restart to update": the launcher starts the new shell
    if code:
        raise CommandFailed(f"the app exited with code {code}")
    return Rendered({}, printed=True)


def cmd_demo(args: argparse.Namespace) -> Rendered:
    """A local signed feed with a good and a crashing release, and the app pointed at it."""
    if args.headless:
        raise UsageError("the demo needs the window; run it without --headless")
    from desktop.demo import run_demo

    code = run_demo(data_dir=args.data_dir, startup_timeout=args.startup_timeout,
                    check_interval=args.check_interval,
                    screenshot=Path(args.screenshot) if args.screenshot else None, exit_after=args.exit_after)
    if code:
        raise CommandFailed(f"the app exited with code {code}")
    return Rendered({}, printed=True)


def cmd_publish_shell(args: argparse.Namespace) -> Rendered:
    from desktop.core.publishing import Publisher

    Shell.report_healthy()
    done = Publisher(Path(args.feed)).publish_shell(Path(args.build), [Path(k) for k in args.key],
                                                    channel=args.channel or "stable", rollout=args.rollout,
                                                    notes=args.notes, platform=args.platform, fmt=args.format)
    return _published(done, "app ")


def _published(done: Any, what: str) -> Rendered:
    """A publish's result: its target, and the deltas published with it (base version: bytes)."""
    _warn(done.warnings)
    verb = "already published" if done.unchanged else "published"
    text = f"{verb} {what}{done.version} ({done.channel}, {done.rollout:g}%) as {done.name}"
    if done.deltas:
        text += "; deltas from " + ", ".join(f"{base} ({mb(size)})" for base, size in done.deltas)
    return Rendered({"name": done.name, "version": done.version, "channel": done.channel, "rollout": done.rollout,
                     "sha256": done.sha256, "length": done.length, "unchanged": done.unchanged,
                     "deltas": {base: size for base, size in done.deltas}, "warnings": list(done.warnings)}, text)


class ProgressPrinter:
    """Progress of a stage on stderr: one line rewritten in place on a terminal, a line per phase
    and per tenth of it otherwise. Download and extraction run at the same time: their progress
    shares the line (and each says "download..." or "extract..." once)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown: dict[Phase, tuple[int | None, int]] = {}  # the terminal line: each phase's percent, bytes
        self.deciles: dict[Phase, int] = {}  # otherwise: the last tenth printed of each phase
        self.dirty = False

    def __call__(self, progress: Progress) -> None:
        phase, done, total = progress.phase, progress.done, progress.total
        pct = min(100, done * 100 // max(total, 1)) if total else None
        if not self.tty:
            if phase not in self.deciles:
                self.deciles[phase] = -1
                print(f"{phase.value}...", file=sys.stderr, flush=True)
            if pct is not None and pct // 10 > self.deciles[phase]:
                self.deciles[phase] = pct // 10
                print(f"{phase.value} {pct}% ({done} of {total} bytes)", file=sys.stderr, flush=True)
            return
        if phase not in self.shown and phase not in (Phase.DOWNLOAD, Phase.EXTRACT):
            self.finish()  # a later step starts its own line
        self.shown[phase] = (pct, done)
        width = 24 if len(self.shown) == 1 else 12  # two phases still fit in 80 columns
        texts = [f"{shown.value} [{'#' * (p * width // 100):<{width}}] {p:3d}% {d / 1048576:.1f} MB" if p is not None
                 else f"{shown.value} {d / 1048576:.1f} MB" if d else f"{shown.value}..."
                 for shown, (p, d) in self.shown.items()]
        print("\r" + " · ".join(texts) + "\x1b[K", end="", file=sys.stderr, flush=True)
        self.dirty = True

    def finish(self) -> None:
        if self.dirty:
            print(file=sys.stderr, flush=True)
        self.dirty = False
        self.shown.clear()
