"""Profile what bench/run.py measures, with pyinstrument (not a project dependency: pip install it).

    .venv/bin/python bench/profile.py stage  [--mb 200] [--out DIR]   # desktop update of a generated archive
    .venv/bin/python bench/profile.py launch [--out DIR]              # desktop launch --until-ready --json
    .venv/bin/python bench/profile.py memory [--mb 800]               # tracemalloc peak of safe_extract

Writes pyinstrument's text reports into --out (default: a temporary directory, printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    PACKAGE,
    PY,
    REPO,
    SEED,
    VERSION,
    build_archive,
    cli_env,
    drop_tree,
    settle,
    small_archive,
)

from tests.support.server import LoopbackServer


def pyinstrument(out: Path, name: str, args: list[str]) -> None:
    """Run `python -m desktop ARGS` under pyinstrument (wall-clock samples), writing NAME.txt."""
    text = out / f"{name}.txt"
    start = time.perf_counter()
    subprocess.run([PY, "-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(text), "-m", "desktop", *args],
                   cwd=REPO, env=cli_env(), check=True, timeout=1800)
    print(f"{name}: {time.perf_counter() - start:.2f} s under the profiler -> {text}")


def profile_stage(work: Path, out: Path, mb: float) -> None:
    built = build_archive(work, f"{mb:g}mb", mb, SEED + int(mb))
    with LoopbackServer() as server:
        server.publish_npm_package(PACKAGE, VERSION, built.archive)
        data = work / "data"
        settle()
        pyinstrument(out, f"stage-{mb:g}mb", ["update", "--data-dir", str(data), "--registry",
                                               f"{server.url}/{PACKAGE}", "--registry-kind", "npm", "--json"])
        drop_tree(data)


def profile_launch(work: Path, out: Path) -> None:
    data = work / "data"
    with LoopbackServer() as server:
        server.publish_npm_package(PACKAGE, VERSION, small_archive(work, VERSION))
        subprocess.run([PY, "-m", "desktop", "update", "--data-dir", str(data), "--registry",
                        f"{server.url}/{PACKAGE}", "--registry-kind", "npm"], cwd=REPO, env=cli_env(),
                       check=True, timeout=300, capture_output=True)
    for _ in range(2):  # warm up, and commit the staged version
        subprocess.run([PY, "-m", "desktop", "launch", "--until-ready", "--json", "--data-dir", str(data)],
                       cwd=REPO, env=cli_env(), check=True, timeout=120, capture_output=True)
    pyinstrument(out, "launch", ["launch", "--until-ready", "--json", "--data-dir", str(data)])


_MEMORY = """
import sys, tracemalloc
from pathlib import Path
from desktop.core.archive import safe_extract
tracemalloc.start()
safe_extract(Path(sys.argv[1]), Path(sys.argv[2]))
current, peak = tracemalloc.get_traced_memory()
print(f"traced Python memory: peak {peak / 1048576:.1f} MB; after safe_extract returned: {current / 1048576:.1f} MB")
for stat in tracemalloc.take_snapshot().statistics("lineno")[:6]:
    print("  ", stat)
"""


def profile_memory(work: Path, mb: float) -> None:
    """Where the extraction's memory grows: Python allocations still alive after safe_extract."""
    built = build_archive(work, f"{mb:g}mb", mb, SEED + int(mb))
    subprocess.run([PY, "-c", _MEMORY, str(built.archive), str(work / "out")], cwd=REPO, env=cli_env(),
                   check=True, timeout=1800)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("stage", "launch", "memory"))
    parser.add_argument("--mb", type=float, default=None, help="archive size (stage: 200, memory: 800)")
    parser.add_argument("--out", metavar="DIR", help="where to write the reports")
    parser.add_argument("--workdir", metavar="DIR", help="where to make the temporary work directory")
    args = parser.parse_args()
    if args.what != "memory" and importlib.util.find_spec("pyinstrument") is None:
        print("pyinstrument is not installed: .venv/bin/pip install pyinstrument==5.1.3", file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="desktop-profile-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="desktop-profile-work-", dir=args.workdir))
    try:
        if args.what == "stage":
            profile_stage(work, out, args.mb or 200.0)
        elif args.what == "launch":
            profile_launch(work, out)
        else:
            profile_memory(work, args.mb or 800.0)
    finally:
        drop_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
