"""Launch cost: `desktop launch --until-ready` against the runtime started directly, and the
launch-time verification of a staged version with 1k / 10k files.

    .venv/bin/python bench/launch.py [--rounds N] [--json FILE]

Contenders run interleaved with the order rotated each round; min and median are reported.
The verification is what every launch does: every recorded file's size (one lstat each) plus
the full hash of the entry point and the native dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from desktop.core.config import load_config  # noqa: E402
from desktop.core.launching import staged_problem  # noqa: E402
from desktop.core.manifest import RuntimeManifest  # noqa: E402
from desktop.core.records import build_record, write_record  # noqa: E402
from desktop.devtools import derive_runtime  # noqa: E402

PY = sys.executable


def filesystem_of(path: Path) -> str:
    out = subprocess.run(["df", "--output=fstype,source", str(path)], capture_output=True, text=True,
                         check=False).stdout.split("\n")[1:2]
    return " ".join(out[0].split()) if out else "unknown"


def time_launch(data: Path) -> float:
    """From starting `desktop launch --until-ready` to its answer (the ready line) on stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "desktop", "launch", "--until-ready", "--json", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    json.loads(line)
    proc.wait(30)
    return elapsed


def time_direct(data: Path) -> float:
    """The bundled runtime started by hand, until its ready line: what the shell adds to."""
    env = {**os.environ, "DESKTOP_RUNTIME_DATA": str(data / "runtime-data"), "DESKTOP_RUNTIME_TOKEN": "x" * 43,
           "DESKTOP_NATIVE_DIR": str(ROOT / "resources" / "native")}
    started = time.perf_counter()
    proc = subprocess.Popen([PY, str(ROOT / "resources" / "runtime" / "app" / "main.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    elapsed = time.perf_counter() - started
    proc.terminate()
    proc.wait(10)
    return elapsed


def staged_with(work: Path, files: int) -> tuple[object, object]:
    data = work / f"data-{files}"
    config = load_config(data_dir=data, registry="http://127.0.0.1:9/", registry_kind="npm")
    extra = {f"lib/d{i % 50}/f{i}.py": (b"# file %d\n" % i) * 20 for i in range(files)}
    from packaging.version import Version

    version = Version("1.1.0")
    vdir = config.data.version_dir(version)
    derive_runtime(vdir, "1.1.0", extra_files=extra)
    shutil.copytree(config.native_root / "textstats", vdir / "textstats")
    manifest = RuntimeManifest.load(vdir)
    config.data.records_dir.mkdir(parents=True, exist_ok=True)
    write_record(config.data.record_file(version), build_record(version, vdir, manifest.entry, manifest.native))
    return config, version


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-launch-", dir=ROOT / "build" if (ROOT / "build").is_dir()
                                     else None) as tmp:
        work = Path(tmp)
        results["filesystem"] = filesystem_of(work)
        data = work / "launch-data"
        time_launch(data)  # first run creates the data dir
        shell_times: list[float] = []
        direct_times: list[float] = []
        for round_ in range(args.rounds):
            order = [time_launch, time_direct] if round_ % 2 == 0 else [time_direct, time_launch]
            for contender in order:
                (shell_times if contender is time_launch else direct_times).append(contender(data))
        overhead = [s - d for s, d in zip(shell_times, direct_times, strict=True)]
        results["launch_until_ready_s"] = {"min": min(shell_times), "median": statistics.median(shell_times)}
        results["runtime_direct_s"] = {"min": min(direct_times), "median": statistics.median(direct_times)}
        results["launch_overhead_s"] = {"min": min(overhead), "median": statistics.median(overhead)}
        for files in (1_000, 10_000):
            config, version = staged_with(work, files)
            times = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                problem = staged_problem(config, version)  # type: ignore[arg-type]
                times.append(time.perf_counter() - started)
                assert problem is None, problem
            results[f"launch_check_{files}_files_ms"] = {"min": min(times) * 1000,
                                                          "median": statistics.median(times) * 1000}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
