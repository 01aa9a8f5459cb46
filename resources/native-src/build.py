"""Build the bundled native helper `textstats` (stdlib only).

    python resources/native-src/build.py [--force] [--quiet]

Compiles textstats.c with the system C compiler ($CC, else cc, gcc or clang) into
resources/native/textstats/libtextstats.so (libtextstats.dylib on macOS). The library is
rebuilt only when the source is newer than the output, so repeated runs leave the file,
which staged runtime versions are compared against byte for byte, untouched.
Windows is not built by this script: see resources/native/textstats/README.md.
Exit status: 0 built or up to date, 1 no compiler / unsupported platform / compile error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "textstats.c"
OUT_DIR = HERE.parent / "native" / "textstats"
COMPILERS = ("cc", "gcc", "clang")


def library_name() -> str:
    """The platform's file name for the library (the runtime uses the same rule)."""
    if sys.platform == "darwin":
        return "libtextstats.dylib"
    if sys.platform == "win32":
        return "textstats.dll"
    return "libtextstats.so"


def find_compiler() -> list[str] | None:
    """The compiler command: $CC if set and found, else the first of cc, gcc, clang on PATH."""
    env_cc = os.environ.get("CC", "").strip()
    if env_cc:
        argv = shlex.split(env_cc)
        if argv and shutil.which(argv[0]):
            return argv
    for name in COMPILERS:
        path = shutil.which(name)
        if path:
            return [path]
    return None


def is_up_to_date(source: Path, output: Path) -> bool:
    try:
        return output.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def compile_library(compiler: list[str], source: Path, output: Path) -> None:
    """Compile into a temporary file next to `output`, then rename it into place atomically."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    if sys.platform == "darwin":
        link = ["-dynamiclib", f"-Wl,-install_name,@rpath/{output.name}"]
    else:
        link = ["-shared", f"-Wl,-soname,{output.name}"]
    argv = [*compiler, "-O2", "-fPIC", "-Wall", "-Wextra", *link, "-o", str(tmp), str(source)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise RuntimeError(f"compiler failed ({result.returncode}): {' '.join(argv)}\n{detail}")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the bundled textstats native library.")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)

    if sys.platform == "win32":
        print("build.py: Windows builds are not automated; see resources/native/textstats/README.md",
              file=sys.stderr)
        return 1
    output = OUT_DIR / library_name()
    if not args.force and is_up_to_date(SOURCE, output):
        if not args.quiet:
            print(f"up to date: {output}")
        return 0
    compiler = find_compiler()
    if compiler is None:
        print("build.py: no C compiler found (tried $CC, cc, gcc, clang); install one, e.g. "
              "`apt-get install gcc` or Xcode command line tools, and re-run", file=sys.stderr)
        return 1
    try:
        compile_library(compiler, SOURCE, output)
    except (OSError, RuntimeError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"built: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
