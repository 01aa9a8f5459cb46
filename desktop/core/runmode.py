"""Runtime mode: `desktop --run-runtime ENTRY [ARGS...]` runs ENTRY like `python ENTRY [ARGS...]`.

A frozen app has no separate interpreter, so a manifest's `{python}` expands to the app itself
plus this flag (`desktop.core.process.python_command`). Unfrozen it works the same and is
harmless. Stdlib only, and checked before anything else is imported (argparse, Qt, the config),
so a runtime starts fast and with the interpreter's default signal dispositions.

What matches `python ENTRY`: `sys.argv == [ENTRY, *ARGS]`; the entry's directory (symlinks
resolved) is first on `sys.path`; it runs as `__main__`; `SystemExit` propagates unchanged
(so `sys.exit("message")` prints and exits 1, as usual); an unhandled `KeyboardInterrupt`
ends the process by SIGINT, as CPython does; a missing entry exits 2 with python's message.
In the frozen app, LD_LIBRARY_PATH is what the shell was started with, not the bundle's.
"""

from __future__ import annotations

import atexit
import os
import runpy
import signal
import sys
from collections.abc import Mapping, MutableMapping, Sequence

RUNTIME_MODE_FLAG = "--run-runtime"
GUARD_MODE_FLAG = "--guard"


def restore_library_path(env: MutableMapping[str, str], source: Mapping[str, str]) -> None:
    """In the frozen app: give `env` the library path the user had (from `source`), or none.

    PyInstaller's bootloader prepends the bundle's directory to LD_LIBRARY_PATH (keeping the
    user's value in LD_LIBRARY_PATH_ORIG) so the app finds its own libraries. Programs started
    from the app must not inherit that, or they load the bundle's libssl, libstdc++, ...
    macOS and Windows bootloaders do not touch the variable.
    """
    if os.name != "posix" or sys.platform == "darwin":
        return
    name = "LIBPATH" if sys.platform.startswith("aix") else "LD_LIBRARY_PATH"
    original = source.get(f"{name}_ORIG")
    env.pop(f"{name}_ORIG", None)
    if original is not None:
        env[name] = original
    else:
        env.pop(name, None)


def requested(argv: Sequence[str]) -> bool:
    """Whether argv (without the program name) asks for runtime mode (or guardian mode)."""
    return len(argv) > 0 and argv[0] in (RUNTIME_MODE_FLAG, GUARD_MODE_FLAG)


def dispatch(argv: Sequence[str]) -> int:
    """Run the mode `requested` said argv asks for."""
    if argv[0] == GUARD_MODE_FLAG:
        from desktop.core import guardian

        return guardian.main(list(argv[1:]))
    return run_runtime(argv[1:])


def run_runtime(args: Sequence[str]) -> int:
    """Run `args[0]` as the main script with `args[1:]`; returns its exit status if it returns."""
    if not args:
        print(f"usage: desktop {RUNTIME_MODE_FLAG} ENTRY [ARGS...]", file=sys.stderr)
        return 2
    entry = args[0]
    if not os.path.exists(entry):
        where = os.path.abspath(entry)
        print(f"desktop: can't open file {where!r}: [Errno 2] No such file or directory", file=sys.stderr)
        return 2
    if getattr(sys, "frozen", False):
        restore_library_path(os.environ, dict(os.environ))
    sys.argv = [entry, *args[1:]]
    if os.path.isfile(entry):  # a directory or zip with __main__.py: run_path puts it on sys.path
        sys.path.insert(0, os.path.dirname(os.path.realpath(entry)))
    # The runtime's own modules win over the shell's: a runtime may ship a package named `desktop`.
    for name in [n for n in sys.modules if n == "desktop" or n.startswith("desktop.")]:
        del sys.modules[name]
    try:
        runpy.run_path(entry, run_name="__main__")
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        # CPython's own behaviour: report it, then die by SIGINT so the parent sees it.
        _report(exc, entry)
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        if os.name == "posix":
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:
        _report(exc, entry)
        return 1
    return 0


def _report(exc: BaseException, entry: str) -> None:
    """An uncaught exception through sys.excepthook, its traceback starting at the entry script."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != entry:
        tb = tb.tb_next
    if tb is not None:
        exc = exc.with_traceback(tb)
    sys.excepthook(type(exc), exc, exc.__traceback__)
