"""Benchmarks of the shell's update and launch paths, against plain tools doing the same job.

    .venv/bin/python bench/run.py [--quick] [--json FILE] [--runs N] [--workdir DIR] [--keep] [--only LIST]

Everything talks only to a loopback server (tests/support/server.py) on 127.0.0.1, works in a
temporary directory and stops on its own (every child process has a timeout). Trees and data
dirs are written on a loop-mounted, journaled ext4 image when run as root (bench/journaled.py;
unmounted at the end, also on failure), else on the work directory's own file system; the
report says which. Comparisons run the contenders interleaved, the order rotated every round,
with the same cleanup before each (delete the previous contender's tree, then sync), for at
least 5 counted rounds; ratios are taken per round and reported as median and min.

1. stage: `desktop update --registry-kind npm` of a generated runtime (full: ~208 MB / 12k
   files; quick: >= 50 MB / >= 5k files, the same files-per-MB as a node_modules tree) into a
   fresh data dir, against the fair baseline `curl -o` + `sha512sum` + `tar xzf` + `sync` and
   against npm's `pacote.extract()` (installed with npm into .cache/bench-node).
2. extract: what extraction alone costs, safe_extract in a fresh process vs `tar xzf` on the
   same archive (also without isal, and the same tree as tar.zst vs `tar --zstd`), and making
   the extracted tree durable with syncfs vs an fsync per file vs os.sync.
3. memory: peak RSS (max RSS from wait4) of `desktop update` per archive size (full:
   50/208/800 MB; quick: the stage run's).
4. check cost: bytes on the wire and round trips of `desktop check`, npm (conditional 304) and
   a TUF feed made with `desktop keygen` / `desktop publish`, up to date and with a new version.
5. launch overhead: `desktop launch --until-ready --json` until its output, against starting the
   runtime's command directly with the shell's environment, with 0/1/10/50 staged versions.
6. verification: the launch check of a staged version with 1k and 10k files (verify_version_dir
   plus an lstat of every file and a hash of the entry point and native deps).
7. delta: bench/delta.py (see its docstring): delta bytes and apply time against tufup's bsdiff
   patches and a full stage, and `desktop update` through a real feed with and without a delta.

`bench/profile.py` runs the same staging or launch under pyinstrument. Ratios in the JSON are
numbers; a baseline that could not run is null, with `<key>_reason`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from packaging.version import Version  # noqa: E402

from desktop import __version__ as SHELL_VERSION  # noqa: E402
from desktop.core.config import load_config  # noqa: E402
from desktop.core.launching import resolve, staged_problem  # noqa: E402
from desktop.core.manifest import verify_version_dir  # noqa: E402
from desktop.core.pack import pack_directory  # noqa: E402
from desktop.core.pointer import Pointer, write_pointer  # noqa: E402
from desktop.core.process import build_argv, new_token, runtime_env  # noqa: E402
from desktop.core.records import build_record, write_record  # noqa: E402
from desktop.devtools import derive_runtime  # noqa: E402
from tests.support.server import LoopbackServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from journaled import measurement_fs  # noqa: E402

PY = sys.executable
PACKAGE = "notes-runtime"
VERSION = "1.1.0"
MB = 1024 * 1024
SEED = 20_240_611
PACOTE_VERSION = "21.5.3"  # newest 2x that supports node 20 (22.x needs node >= 22.22)
NODE_DIR = REPO / ".cache" / "bench-node"
PACOTE_SCRIPT = Path(__file__).resolve().parent / "pacote_extract.js"
NATIVE_ROOT = REPO / "resources" / "native"
BUNDLED_RUNTIME = REPO / "resources" / "runtime"
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy"}

# Targets (see the brief in the module docstring).
TARGET_CURL_TAR = 1.0  # against curl -o + sha512sum + tar xzf + sync
TARGET_PACOTE = 0.3
TARGET_RSS_MB = 64.0
TARGET_RSS_SPREAD_MB = 10.0
TARGET_CHECK_BYTES = 2048
TARGET_LAUNCH_S = 0.5
TARGET_LAUNCH_SPREAD_S = 0.1
TARGET_VERIFY_MS = 50.0



@dataclass(frozen=True)
class Mix:
    """Share of the unpacked bytes per kind of file, and how well the result compresses (measured)."""

    large: float
    medium: float
    archive_ratio: float


FULL_MIX = Mix(0.40, 0.35, 0.70)  # 200 MB archive -> ~208 MB, ~12k files
# Quick mode: a smaller archive (>= 50 MB) with as many files per MB as a real node_modules
# tree (>= 5k), so that its ratios mean what the full run's mean.
QUICK_MIX = Mix(0.25, 0.30, 0.62)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A measurement could not be made; the message becomes the `_reason`."""


# --------------------------------------------------------------------------- processes


@dataclass
class Run:
    seconds: float
    returncode: int
    maxrss_mb: float
    stdout: str
    stderr: str
    cpu_s: float = 0.0  # user + system time of the command and the children it waited for

    def check(self, what: str) -> Run:
        if self.returncode != 0:
            tail = " | ".join((self.stderr or self.stdout).strip().splitlines()[-3:])
            raise BenchError(f"{what} exited with {self.returncode}: {tail}")
        return self


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# Runs one command and reports its wall time and max RSS. The command is forked from this small,
# fresh interpreter rather than from the benchmark: a child's ru_maxrss starts at the high-water
# RSS of the process it was forked from (Linux records the old mm's peak at exec), so forking
# from the large benchmark process would report the benchmark's own memory.
_MEASURE = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
with open(out, "w") as fh:
    json.dump({"seconds": elapsed, "maxrss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, fh)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_timed(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Run:
    """Run `argv` to completion: wall time from fork to reap, and its max RSS (os.wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        report = Path(tmp) / "usage.json"
        proc = subprocess.Popen([PY, "-I", "-S", "-c", _MEASURE, str(report), *argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            raise BenchError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} timed out after {timeout:g} s") from None
        finally:
            _kill_group(proc.pid)  # anything it left behind in its group
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        try:
            usage = json.loads(report.read_text())
        except (OSError, ValueError):
            raise BenchError(f"{Path(argv[0]).name} could not be measured: {stderr.strip()[-300:]}") from None
    return Run(usage["seconds"], proc.returncode, usage["maxrss_kb"] / 1024, stdout, stderr, usage["cpu_s"])


def clean_env() -> dict[str, str]:
    """This environment without proxies (everything is on 127.0.0.1) and without DESKTOP_* settings."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS and not k.startswith("DESKTOP_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def cli_env() -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def cli_argv(*args: str | Path) -> list[str]:
    return [PY, "-m", "desktop", *(str(a) for a in args)]


def cli(*args: str | Path, timeout: float = 120) -> Run:
    return run_timed(cli_argv(*args), timeout=timeout, env=cli_env(), cwd=REPO)


def cli_json(*args: str | Path, timeout: float = 120) -> dict[str, Any]:
    run = cli(*args, "--json", timeout=timeout).check(f"desktop {args[0]}")
    try:
        obj = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"desktop {args[0]} printed no JSON: {run.stdout[-200:]!r}") from None
    if not isinstance(obj, dict):
        raise BenchError(f"desktop {args[0]} printed {obj!r}")
    return obj


def tool_version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if done.returncode == 0 and text else None


def drop_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def settle() -> None:
    """Flush dirty pages left by setup or the previous run, so no run pays for another's writes."""
    os.sync()


def median(values: list[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------- runtime generation


def _text_pool(rnd: random.Random, size: int) -> bytes:
    """Source-like text (compresses about 2.5x with gzip -9), made of random identifiers."""
    words = [rnd.randbytes(8).hex()[: rnd.randint(2, 12)] for _ in range(4000)]
    punct = [b" ", b" ", b" ", b".", b"(", b");\n", b" = ", b", ", b"{\n  ", b"}\n"]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words).encode() + rnd.choice(punct)
    return bytes(out[:size])


def _write_text(path: Path, size: int, pool: bytes, rnd: random.Random) -> None:
    if size <= len(pool):
        start = rnd.randrange(len(pool) - size + 1)
        path.write_bytes(pool[start:start + size])
        return
    with open(path, "wb") as fh:
        left = size
        while left:
            piece = pool[: min(left, len(pool))]
            fh.write(piece)
            left -= len(piece)


def _write_binary(path: Path, size: int, rnd: random.Random) -> None:
    """Machine-code-like bytes: random runs with zero and filler padding (gzip -9 keeps ~80%)."""
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            run = rnd.randbytes(min(left, rnd.randint(4096, 65536)))
            fh.write(run)
            left -= len(run)
            gap = min(left, rnd.randint(256, 16384))
            if gap > 0:
                fh.write(bytes(gap) if rnd.random() < 0.5 else (b"\x90\x00\xff\x7f" * (gap // 4 + 1))[:gap])
                left -= gap


@dataclass
class Generated:
    directory: Path
    files: int
    unpacked_bytes: int


def generate_runtime(dest: Path, version: str, archive_bytes: int, seed: int, mix: Mix = FULL_MIX) -> Generated:
    """A runtime (the bundled app plus a node_modules-like tree) whose archive is about `archive_bytes`.

    Mixed like a real runtime: a few large binaries (40% of the bytes), medium binaries of
    64 KB-2 MB (35%), and many small source files of 100 B-64 KB (25%), 8-40 files per package.
    Deterministic for a given seed.
    """
    rnd = random.Random(seed)
    unpacked = int(archive_bytes / mix.archive_ratio)
    derive_runtime(dest, version)
    pool = _text_pool(rnd, 4 * MB)
    large_total = int(unpacked * mix.large)
    medium_total = int(unpacked * mix.medium)
    small_total = unpacked - large_total - medium_total
    (dest / "lib").mkdir()
    written, files = 0, 0
    for i, share in enumerate((0.5, 0.3, 0.2)):
        size = int(large_total * share)
        _write_binary(dest / "lib" / f"libruntime-core-{i}.so", size, rnd)
        written += size
        files += 1
    sizes: list[tuple[str, int]] = []
    left = medium_total
    while left > 0:
        size = min(left, int(math.exp(rnd.uniform(math.log(64 * 1024), math.log(2 * MB)))))
        sizes.append(("bin", size))
        left -= size
    left = small_total
    while left > 0:
        size = min(left, max(100, min(64 * 1024, int(rnd.lognormvariate(math.log(4000), 1.0)))))
        sizes.append(("text", size))
        left -= size
    rnd.shuffle(sizes)
    modules = dest / "node_modules"
    index, package = 0, 0
    while index < len(sizes):
        count = rnd.randint(8, 40)
        pkg = modules / f"pkg-{package:05d}"
        (pkg / "lib").mkdir(parents=True)
        (pkg / "package.json").write_text(json.dumps({"name": f"pkg-{package:05d}", "version": "1.0.0"}))
        files += 1
        for j, (kind, size) in enumerate(sizes[index:index + count]):
            if kind == "bin":
                (pkg / "build").mkdir(exist_ok=True)
                _write_binary(pkg / "build" / f"addon-{j}.node", size, rnd)
            else:
                sub = pkg / ("lib" if j % 3 else "dist")
                sub.mkdir(exist_ok=True)
                _write_text(sub / f"m{j}.js", size, pool, rnd)
            written += size
            files += 1
        index += count
        package += 1
    return Generated(dest, files, written)


@dataclass
class Published:
    archive: Path
    archive_bytes: int
    files: int
    unpacked_bytes: int
    generate_s: float


def build_archive(work: Path, name: str, archive_mb: float, seed: int, mix: Mix = FULL_MIX) -> Published:
    start = time.perf_counter()
    src = generate_runtime(work / f"src-{name}", VERSION, int(archive_mb * MB), seed, mix)
    archive = work / f"{PACKAGE}-{name}.tgz"
    pack_directory(src.directory, archive)
    drop_tree(src.directory)
    published = Published(archive, archive.stat().st_size, src.files, src.unpacked_bytes,
                           time.perf_counter() - start)
    log(f"  archive {name}: {published.archive_bytes / MB:.1f} MB packed, {src.unpacked_bytes / MB:.1f} MB "
        f"in {src.files} files unpacked ({published.generate_s:.1f} s to make)")
    return published


def small_archive(work: Path, version: str) -> Path:
    src = derive_runtime(work / f"small-src-{version}", version)
    archive = work / f"{PACKAGE}-small-{version}.tgz"
    pack_directory(src, archive)
    return archive


# --------------------------------------------------------------------------- contenders
#
# Every contender reads the archive from the loopback server and writes its tree on the
# measured file system; the same cleanup runs before each of them (delete the previous
# contender's tree, then sync), and nothing else is dropped or warmed.


@dataclass
class Contender:
    name: str
    run: Callable[[str], Run]  # tag -> the timed run (its output left on disk for the next cleanup)
    outputs: Callable[[str], list[Path]]  # tag -> what to delete before the next contender


def stage_ours(fs: Path, registry: str, tag: str) -> Run:
    data = fs / f"ours-{tag}"
    run = cli("update", "--data-dir", data, "--registry", registry, "--registry-kind", "npm", "--json",
              timeout=1800).check("desktop update")
    try:
        outcome = json.loads(run.stdout.strip().splitlines()[-1]).get("outcome")
    except (ValueError, IndexError):
        outcome = None
    if outcome != "staged" or not (data / "versions" / VERSION / "runtime.json").is_file():
        raise BenchError(f"desktop update did not stage {VERSION}: {run.stdout.strip()[-300:]}")
    return run


# The fair baseline: what a careful script does with the same bytes (download, check the
# published digest, unpack, make it durable).
_BASELINE = 'curl -s -o "$1" "$2" && sha512sum "$1" > /dev/null && tar xzf "$1" -C "$3" && sync'


def stage_baseline(fs: Path, tarball_url: str, tag: str) -> Run:
    file = fs / f"base-{tag}.tgz"
    out = fs / f"base-{tag}"
    out.mkdir()
    run = run_timed(["sh", "-c", _BASELINE, "baseline", str(file), tarball_url, str(out)], timeout=1800,
                    env=clean_env()).check("curl + sha512sum + tar + sync")
    if not (out / "package" / "runtime.json").is_file():
        raise BenchError("curl + tar did not produce package/runtime.json")
    return run


def stage_pacote(fs: Path, registry: str, tag: str) -> Run:
    dest = fs / f"pacote-{tag}"
    cache = fs / f"pacote-cache-{tag}"
    run = run_timed(["node", str(PACOTE_SCRIPT), str(NODE_DIR / "node_modules" / "pacote"),
                     f"{PACKAGE}@{VERSION}", str(dest), registry + "/", str(cache)],
                    timeout=1800, env=clean_env()).check("pacote")
    if not (dest / "runtime.json").is_file():
        raise BenchError("pacote.extract did not produce runtime.json")
    return run


def ensure_pacote() -> tuple[bool, str]:
    """(usable, reason-or-version): pacote PACOTE_VERSION installed under .cache/bench-node."""
    if shutil.which("node") is None:
        return False, "node not found"
    manifest = NODE_DIR / "node_modules" / "pacote" / "package.json"

    def installed() -> bool:
        try:
            return json.loads(manifest.read_text()).get("version") == PACOTE_VERSION
        except (OSError, ValueError):
            return False

    if not installed():
        if shutil.which("npm") is None:
            return False, "npm not found (needed once to install pacote)"
        log(f"installing pacote@{PACOTE_VERSION} into {NODE_DIR}")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTOP_")}
        try:
            done = subprocess.run(["npm", "install", "--prefix", str(NODE_DIR), "--no-save", "--no-package-lock",
                                   "--no-audit", "--no-fund", "--loglevel=error", f"pacote@{PACOTE_VERSION}"],
                                  capture_output=True, text=True, timeout=240, check=False, env=env)
        except subprocess.TimeoutExpired:
            return False, "npm install pacote timed out"
        if done.returncode != 0 or not installed():
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return False, f"npm install pacote@{PACOTE_VERSION} failed: {tail}"
    return True, PACOTE_VERSION


# --------------------------------------------------------------------------- 1 + 2: staging


def rotated(names: list[str], round_no: int) -> list[str]:
    k = round_no % len(names)
    return names[k:] + names[:k]


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(median(values), 3), "max": round(max(values), 3)}


def interleave(contenders: list[Contender], rounds: int, warmup: bool) -> dict[str, list[Run]]:
    """Run every contender once per round, the order rotated each round; returns the counted runs.

    Before each contender: delete the previous contender's output, then sync. The warm-up
    round (page cache, node and Python start-up files) is not counted.
    """
    runs: dict[str, list[Run]] = {c.name: [] for c in contenders}
    by_name = {c.name: c for c in contenders}
    pending: list[Path] = []
    total = rounds + (1 if warmup else 0)
    try:
        for i in range(total):
            counted = not warmup or i > 0
            tag = str(i) if counted else "warm"
            line = []
            for name in rotated([c.name for c in contenders], i):
                for path in pending:
                    drop_tree(path)
                pending = []
                settle()
                contender = by_name[name]
                pending = contender.outputs(tag)
                run = contender.run(tag)
                line.append(f"{name} {run.seconds:.2f} s")
                if counted:
                    runs[name].append(run)
            log(f"  round {tag}: " + ", ".join(line))
    finally:
        for path in pending:
            drop_tree(path)
    return runs


def measure_stage(fs: Path, built: Published, rounds: int, pacote: tuple[bool, str]) -> dict[str, Any]:
    """desktop update vs curl + sha512sum + tar + sync vs pacote.extract, interleaved; ratios per round."""
    result: dict[str, Any] = {"runs": rounds, "archive_mb": round(built.archive_bytes / MB, 2),
                              "files": built.files, "unpacked_mb": round(built.unpacked_bytes / MB, 2)}
    have_tools = all(shutil.which(t) for t in ("curl", "tar", "sha512sum", "sh"))
    pacote_ok, pacote_info = pacote
    with LoopbackServer() as server:
        doc = server.publish_npm_package(PACKAGE, VERSION, built.archive)
        registry = f"{server.url}/{PACKAGE}"
        tarball = doc["dist"]["tarball"]
        contenders = [Contender("ours", lambda tag: stage_ours(fs, registry, tag),
                                lambda tag: [fs / f"ours-{tag}"])]
        if have_tools:
            contenders.append(Contender("baseline", lambda tag: stage_baseline(fs, tarball, tag),
                                        lambda tag: [fs / f"base-{tag}", fs / f"base-{tag}.tgz"]))
        if pacote_ok:
            contenders.append(Contender("pacote", lambda tag: stage_pacote(fs, server.url, tag),
                                        lambda tag: [fs / f"pacote-{tag}", fs / f"pacote-cache-{tag}"]))
        runs = interleave(contenders, rounds, warmup=True)
    ours = [r.seconds for r in runs["ours"]]
    result.update(ours_s=round(median(ours), 3), ours_samples_s=[round(s, 3) for s in ours],
                  ours_mb_per_s=round(built.archive_bytes / MB / median(ours), 1),
                  ours_peak_rss_mb=round(max(r.maxrss_mb for r in runs["ours"]), 1),
                  ours_cpu_s=round(median([r.cpu_s for r in runs["ours"]]), 3))
    for key, name, reason in (("curl_tar", "baseline", "curl, tar, sha512sum or sh not found"),
                              ("pacote", "pacote", pacote_info)):
        if name not in runs:
            result.update({f"{key}_s": None, f"stage_vs_{key}": None, f"stage_vs_{key}_reason": reason})
            continue
        theirs = [r.seconds for r in runs[name]]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        result.update({
            f"{key}_s": round(median(theirs), 3), f"{key}_samples_s": [round(s, 3) for s in theirs],
            f"{key}_cpu_s": round(median([r.cpu_s for r in runs[name]]), 3),
            f"stage_vs_{key}": round(median(ratios), 3), f"stage_vs_{key}_min": round(min(ratios), 3),
            f"stage_vs_{key}_ratios": [round(r, 3) for r in ratios],
        })
    return result


_EXTRACT = """
import sys, time
from pathlib import Path
if sys.argv[1] == "zlib":
    sys.modules["isal"] = None  # the fallback when the isal wheel is missing
from desktop.core.archive import safe_extract
safe_extract(Path(sys.argv[2]), Path(sys.argv[3]))
"""

_DURABLE = """
import os, sys, time
from pathlib import Path
from desktop.core.archive import safe_extract
from desktop.core.archive.durable import fsync_tree, syncfs
safe_extract(Path(sys.argv[2]), Path(sys.argv[3]))
start = time.perf_counter()
{"syncfs": lambda: syncfs(sys.argv[3]), "fsync": lambda: fsync_tree(sys.argv[3]), "sync": os.sync}[sys.argv[1]]()
print(time.perf_counter() - start)
"""


def _to_tar_zst(tgz: Path, out: Path) -> None:
    """The same tar stream as `tgz`, as tar.zst (level 3: decoding speed does not depend on the level)."""
    from backports import zstd

    from desktop.core.archive._tar import ZSTD_WINDOW_LOG_MAX, gzip_module

    options = {zstd.CompressionParameter.compression_level: 3, zstd.CompressionParameter.checksum_flag: 1,
               zstd.CompressionParameter.window_log: ZSTD_WINDOW_LOG_MAX,
               zstd.CompressionParameter.enable_long_distance_matching: 1}
    with gzip_module().open(tgz, "rb") as src, zstd.ZstdFile(out, "w", options=options) as dst:
        shutil.copyfileobj(src, dst, MB)


def measure_extract(fs: Path, built: Published, rounds: int, quick: bool) -> dict[str, Any]:
    """What extraction alone costs: safe_extract vs GNU tar on the same archive and file system."""
    zst = built.archive.with_suffix(".tar.zst")
    _to_tar_zst(built.archive, zst)
    py = [PY, "-c", _EXTRACT]
    env = cli_env()

    def timed(argv: list[str], what: str) -> Run:
        return run_timed(argv, timeout=1800, env=env, cwd=REPO).check(what)

    def untar(flags: list[str], archive: Path, out: Path) -> Run:
        out.mkdir()
        return timed(["tar", *flags, str(archive), "-C", str(out)], f"tar {' '.join(flags)}")

    contenders = [
        Contender("ours_gz", lambda tag: timed([*py, "isal", str(built.archive), str(fs / f"x-gz-{tag}")], "ours"),
                  lambda tag: [fs / f"x-gz-{tag}"]),
        Contender("ours_gz_zlib", lambda tag: timed([*py, "zlib", str(built.archive), str(fs / f"x-zl-{tag}")],
                                                    "ours (zlib)"),
                  lambda tag: [fs / f"x-zl-{tag}"]),
        Contender("tar_xzf", lambda tag: untar(["-xzf"], built.archive, fs / f"t-gz-{tag}"),
                  lambda tag: [fs / f"t-gz-{tag}"]),
        Contender("ours_zst", lambda tag: timed([*py, "isal", str(zst), str(fs / f"x-zst-{tag}")], "ours zst"),
                  lambda tag: [fs / f"x-zst-{tag}"]),
    ]
    if shutil.which("zstd"):
        contenders.append(Contender("tar_zstd", lambda tag: untar(["--zstd", "-xf"], zst, fs / f"t-zst-{tag}"),
                                    lambda tag: [fs / f"t-zst-{tag}"]))
    runs = interleave(contenders, rounds, warmup=False)
    result: dict[str, Any] = {"runs": rounds, "tar_zst_mb": round(zst.stat().st_size / MB, 2),
                              "tar_gz_mb": round(built.archive_bytes / MB, 2)}
    for name, samples in runs.items():
        result[f"{name}_s"] = spread([r.seconds for r in samples])
        result[f"{name}_cpu_s"] = round(median([r.cpu_s for r in samples]), 3)
        result[f"{name}_peak_rss_mb"] = round(max(r.maxrss_mb for r in samples), 1)

    def ratio(a: str, b: str) -> dict[str, float]:
        return spread([x.seconds / y.seconds for x, y in zip(runs[a], runs[b], strict=True)])

    result["extract_vs_tar"] = ratio("ours_gz", "tar_xzf")
    result["extract_zlib_vs_tar"] = ratio("ours_gz_zlib", "tar_xzf")
    if "tar_zstd" in runs:
        result["extract_zst_vs_tar_zstd"] = ratio("ours_zst", "tar_zstd")
    result["extract_zst_vs_gz"] = ratio("ours_zst", "ours_gz")
    zst.unlink(missing_ok=True)

    # Durability of a freshly extracted tree: syncfs of its file system vs fsync of every file vs os.sync.
    # An fsync per file costs seconds per round: measured in the full run only.
    durable: dict[str, list[float]] = {"syncfs": [], "sync": []} if quick else {"syncfs": [], "fsync": [], "sync": []}
    for i in range(rounds):
        for method in rotated(list(durable), i):
            out = fs / f"d-{method}-{i}"
            settle()
            run = run_timed([PY, "-c", _DURABLE, method, str(built.archive), str(out)], timeout=1800, env=env,
                            cwd=REPO).check(f"durable {method}")
            durable[method].append(float(run.stdout.strip().splitlines()[-1]))
            drop_tree(out)
    result["durable_s"] = {method: spread(samples) for method, samples in durable.items()}
    result["extract_vs_tar_median"] = result["extract_vs_tar"]["median"]
    log("  extraction: ours/tar xzf median {:.2f} (min {:.2f}); zlib fallback {:.2f}; durable {}".format(
        result["extract_vs_tar"]["median"], result["extract_vs_tar"]["min"], result["extract_zlib_vs_tar"]["median"],
        {m: v["median"] for m, v in result["durable_s"].items()}))
    return result


def measure_memory(fs: Path, work: Path, sizes_mb: list[float], known: dict[float, float]) -> dict[str, Any]:
    """Max RSS of `desktop update` per archive size (sizes already measured are reused)."""
    by_size: dict[str, float] = {}
    for size in sizes_mb:
        if size in known:
            by_size[f"{size:g}"] = round(known[size], 1)
            continue
        built = build_archive(work, f"mem-{size:g}mb", size, SEED + int(size))
        try:
            with LoopbackServer() as server:
                server.publish_npm_package(PACKAGE, VERSION, built.archive)
                settle()
                try:
                    run = stage_ours(fs, f"{server.url}/{PACKAGE}", f"mem-{size:g}")
                finally:
                    drop_tree(fs / f"ours-mem-{size:g}")
        finally:
            built.archive.unlink(missing_ok=True)
        log(f"  memory {size:g} MB: {run.maxrss_mb:.1f} MB max RSS ({run.seconds:.1f} s)")
        by_size[f"{size:g}"] = round(run.maxrss_mb, 1)
    largest = max(sizes_mb)
    peak = max(by_size.values())
    return {"peak_rss_mb": by_size[f"{largest:g}"], "peak_rss_mb_max": peak, "peak_rss_mb_by_size": by_size,
            "peak_rss_spread_mb": round(peak - min(by_size.values()), 1)}


# --------------------------------------------------------------------------- 3: checks


def _exchange(server: LoopbackServer, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    server.clear_requests()
    answer = action()
    requests = server.requests
    return {
        "round_trips": len(requests),
        "wire_bytes": sum(r.wire_bytes for r in requests),
        "body_bytes": sum(r.bytes_sent for r in requests),
        "requests": [f"{r.method} {r.path} {r.status} {r.wire_bytes}B" for r in requests],
        "available": answer.get("available"),
    }


def measure_checks(work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    first_src = derive_runtime(work / "check-src-1.1.0", "1.1.0")
    second_src = derive_runtime(work / "check-src-1.2.0", "1.2.0")
    with LoopbackServer() as server:
        # npm: package document with an ETag; an up-to-date check is one conditional request.
        server.publish_npm_package(PACKAGE, "1.1.0", small_archive(work, "1.1.0"))
        data = work / "check-npm"
        npm = ["--data-dir", data, "--registry", f"{server.url}/{PACKAGE}", "--registry-kind", "npm"]
        result["npm_first"] = _exchange(server, lambda: cli_json("check", *npm))
        if cli_json("update", *npm).get("outcome") != "staged":
            raise BenchError("npm: desktop update did not stage 1.1.0")
        result["npm_up_to_date"] = _exchange(server, lambda: cli_json("check", *npm))
        server.publish_npm_package(PACKAGE, "1.2.0", small_archive(work, "1.2.0"))
        result["npm_new_version"] = _exchange(server, lambda: cli_json("check", *npm))
        # feed: a TUF repository made with the CLI, served as static files.
        key = work / "feed.key"
        pub = Path(cli_json("keygen", "--out", key)["public_key_file"])
        feed = work / "feed"
        cli_json("publish", first_src, "--feed", feed, "--key", key)
        server.serve_directory("/feed/", feed)
        fdata = work / "check-feed"
        fed = ["--data-dir", fdata, "--registry", f"{server.url}/feed/", "--registry-kind", "feed",
               "--public-key", pub]
        result["feed_first"] = _exchange(server, lambda: cli_json("check", *fed))
        if cli_json("update", *fed).get("outcome") != "staged":
            raise BenchError("feed: desktop update did not stage 1.1.0")
        result["feed_up_to_date"] = _exchange(server, lambda: cli_json("check", *fed))
        cli_json("publish", second_src, "--feed", feed, "--key", key)
        result["feed_new_version"] = _exchange(server, lambda: cli_json("check", *fed))
    for name in ("npm_up_to_date", "feed_up_to_date"):
        if result[name]["available"] is not None:
            raise BenchError(f"{name}: the check offered {result[name]['available']}")
    for name in ("npm_first", "npm_new_version", "feed_first", "feed_new_version"):
        if result[name]["available"] is None:
            raise BenchError(f"{name}: the check found no new version")
    result["check_bytes_up_to_date"] = result["npm_up_to_date"]["wire_bytes"]
    result["check_round_trips_up_to_date"] = result["npm_up_to_date"]["round_trips"]
    return result


# --------------------------------------------------------------------------- 4: launch


def _read_json_line(proc: subprocess.Popen[bytes], deadline: float,
                    want: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any] | None, float]:
    """The first stdout line that is a JSON object `want` accepts, and when it arrived."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None, time.perf_counter()
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        now = time.perf_counter()
        if not chunk:
            return None, now
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and want(obj):
                return obj, now


def _finish(proc: subprocess.Popen[bytes], *, terminate: bool, timeout: float = 10) -> float:
    """Stop (if asked) and reap `proc`; returns when it was reaped."""
    if terminate:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.wait(5)
    done = time.perf_counter()
    _kill_group(proc.pid)
    if proc.stdout is not None:
        proc.stdout.close()
    return done


def _log_times(log_file: Path) -> tuple[float | None, float | None]:
    """Wall-clock times (ms resolution) at which the shell spawned the runtime and read its ready line."""
    spawned = ready = None
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None, None
    for line in lines:
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if "[shell] started" in line:
            spawned = stamp
        elif "stdout] {" in line and '"ready": true' in line:
            ready = stamp
    return spawned, ready


def launch_once(data: Path) -> dict[str, float]:
    """`desktop launch --until-ready --json`: seconds to its output line and to its exit."""
    log_file = data / "logs" / "runtime.log"
    log_file.unlink(missing_ok=True)
    wall0 = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cli_argv("launch", "--until-ready", "--json", "--data-dir", data), cwd=REPO,
                            env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    obj, seen = _read_json_line(proc, start + 60, lambda o: "url" in o and "version" in o)
    done = _finish(proc, terminate=obj is None)
    if obj is None:
        raise BenchError(f"desktop launch printed no ready JSON (exit {proc.returncode})")
    spawned, ready = _log_times(log_file)
    times = {"output_s": seen - start, "exit_s": done - start}
    if spawned is not None and ready is not None:
        times.update(runtime_spawned_s=spawned - wall0, runtime_ready_s=ready - wall0)
    return times


def direct_once(data: Path) -> float:
    """The runtime's own command with the shell's environment: seconds to its ready line."""
    config = load_config(data_dir=data)
    target = resolve(config, repair=False)
    argv, env = build_argv(target), runtime_env(config, target, new_token())
    config.data.runtime_data_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=target.directory, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    obj, seen = _read_json_line(proc, start + 60, lambda o: o.get("ready") is True)
    _finish(proc, terminate=True)
    if obj is None:
        raise BenchError(f"the runtime printed no ready line (exit {proc.returncode})")
    return seen - start


def _clone_version(versions: Path, source: str, version: str) -> None:
    dest = versions / version
    shutil.copytree(versions / source, dest, symlinks=True)
    manifest = json.loads((dest / "runtime.json").read_text())
    manifest["version"] = version
    (dest / "runtime.json").write_text(json.dumps(manifest, indent=2) + "\n")
    records = versions.parent / "records"
    write_record(records / f"{version}.json", build_record(Version(version), dest, manifest["entry"],
                                                           tuple(manifest.get("native", []))))


def measure_launch(work: Path, reps: int, counts: list[int]) -> dict[str, Any]:
    data = work / "launch-data"
    with LoopbackServer() as server:
        server.publish_npm_package(PACKAGE, VERSION, small_archive(work, VERSION))
        outcome = cli_json("update", "--data-dir", data, "--registry", f"{server.url}/{PACKAGE}",
                           "--registry-kind", "npm").get("outcome")
        if outcome != "staged":
            raise BenchError(f"desktop update did not stage {VERSION} for the launch benchmark")
    versions = data / "versions"
    staged = [VERSION]
    scenarios: dict[str, Any] = {}
    for count in counts:
        if count == 0:
            scenario_data = work / "launch-bundled"
            scenario_data.mkdir()
        else:
            scenario_data = data
            while len(staged) < count:
                name = f"1.1.{len(staged)}"
                _clone_version(versions, VERSION, name)
                staged.append(name)
            write_pointer(data / "current.json", Pointer(Version(staged[-1]), known_good=True))
        launch_once(scenario_data)  # warm-up: page cache, pointer commit, runtime data dir
        direct_once(scenario_data)
        launches: list[dict[str, float]] = []
        directs: list[float] = []
        for _ in range(reps):
            launches.append(launch_once(scenario_data))
            directs.append(direct_once(scenario_data))
        output = median([t["output_s"] for t in launches])
        direct = median(directs)
        entry: dict[str, Any] = {
            "versions_on_disk": count, "launched": "bundled" if count == 0 else staged[-1],
            "launch_output_s": round(output, 3), "direct_ready_s": round(direct, 3),
            "overhead_s": round(output - direct, 3),
            "launch_exit_s": round(median([t["exit_s"] for t in launches]), 3),
            "launch_samples_s": [round(t["output_s"], 3) for t in launches],
            "direct_samples_s": [round(s, 3) for s in directs],
        }
        with_log = [t for t in launches if "runtime_ready_s" in t]
        if with_log:
            entry["shell_spawned_runtime_s"] = round(median([t["runtime_spawned_s"] for t in with_log]), 3)
            entry["shell_saw_ready_s"] = round(median([t["runtime_ready_s"] for t in with_log]), 3)
            entry["ready_to_output_s"] = round(median([t["output_s"] - t["runtime_ready_s"] for t in with_log]), 3)
        scenarios[str(count)] = entry
        log(f"  launch with {count} staged: output {output:.3f} s, direct {direct:.3f} s, "
            f"overhead {output - direct:.3f} s")
    overheads = {k: v["overhead_s"] for k, v in scenarios.items()}
    staged_overheads = [v for k, v in overheads.items() if k != "0"]
    return {
        "launch_overhead_s": max(overheads.values()),
        "launch_overhead_by_versions": overheads,
        "launch_overhead_spread_s": round(max(staged_overheads) - min(staged_overheads), 3)
        if staged_overheads else None,
        "scenarios": scenarios, "reps": reps,
    }


# --------------------------------------------------------------------------- 5: verification


def _make_version_dir(dest: Path, files: int, rnd: random.Random, pool: bytes) -> None:
    derive_runtime(dest, VERSION)
    shutil.copytree(NATIVE_ROOT / "textstats", dest / "textstats", symlinks=True)
    for i in range(files):
        directory = dest / "node_modules" / f"pkg-{i // 25:05d}" / ("lib" if i % 4 else "dist")
        directory.mkdir(parents=True, exist_ok=True)
        _write_text(directory / f"m{i}.js", rnd.randint(100, 4000), pool, rnd)


def _walk_stat(root: Path) -> int:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def _walk_hash(root: Path) -> int:
    count = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as fh:
                hashlib.file_digest(fh, "sha256")
            count += 1
    return count


def _time_ms(func: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def measure_verify(work: Path, counts: list[int], repeat: int) -> dict[str, Any]:
    """Launch-time verification of a staged version with 1k and 10k files: the real launch check.

    `verify_version_dir` checks the manifest, the entry point and the native deps; the launch
    check (`launching.staged_problem`) adds the staging record: an lstat of every recorded file
    and the hash of the entry point and native deps. `verify_ms` is that whole check.
    """
    rnd = random.Random(SEED)
    pool = _text_pool(rnd, MB)
    result: dict[str, Any] = {}
    for files in counts:
        data = work / f"verify-{files}"
        config = load_config(data_dir=data, registry="http://127.0.0.1:9/", registry_kind="npm")
        directory = config.data.version_dir(Version(VERSION))
        _make_version_dir(directory, files, rnd, pool)
        manifest = json.loads((directory / "runtime.json").read_text())
        write_record(config.data.record_file(Version(VERSION)),
                     build_record(Version(VERSION), directory, manifest["entry"], tuple(manifest.get("native", []))))

        def verify(directory: Path = directory) -> object:
            return verify_version_dir(directory, expected=Version(VERSION), shell_version=SHELL_VERSION,
                                      native_root=NATIVE_ROOT)

        def full(config: Any = config) -> object:
            problem = staged_problem(config, Version(VERSION))
            if problem is not None:
                raise BenchError(f"the staged version does not verify: {problem}")
            return problem

        full()
        manifest_only = _time_ms(verify, repeat)
        checks = _time_ms(full, max(5, repeat // 4))
        hashes = _time_ms(lambda directory=directory: _walk_hash(directory), 3)
        entries = _walk_stat(directory)
        result[str(files)] = {
            "entries": entries,
            "verify_ms": round(median(checks), 3), "verify_max_ms": round(max(checks), 3),
            "verify_version_dir_ms": round(median(manifest_only), 3),
            "walk_hash_ms": round(median(hashes), 2),
        }
        log(f"  verify {files} files: {median(checks):.2f} ms, the launch check "
            f"(verify_version_dir alone {median(manifest_only):.2f} ms, hashing every file {median(hashes):.1f} ms)")
        drop_tree(data)
    largest = str(max(counts))
    return {"verify_ms_largest": result[largest]["verify_ms"], "largest_files": int(largest), "by_files": result}


# --------------------------------------------------------------------------- report


@dataclass
class Row:
    measurement: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    quick: bool
    data: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def null(self, key: str, reason: str) -> None:
        self.data[key] = None
        self.data[f"{key}_reason"] = reason


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "missed")


def _s(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def build_rows(report: Report) -> None:
    d = report.data
    rows = report.rows
    stage = d.get("stage") or {}
    size = f"{stage.get('archive_mb', 0):.0f} MB" if stage else "?"
    runs = stage.get("runs", "?")
    if stage.get("ours_s") is not None:
        rows.append(Row(f"stage {size} archive ({stage.get('files')} files), median of {runs} rounds",
                        _s(stage.get("ours_s")) + f" ({stage.get('ours_mb_per_s')} MB/s)"))

    def samples(entry: dict[str, Any], key: str) -> str:
        values = entry.get(key) or []
        return f" [{min(values):.2f}–{max(values):.2f}]" if len(values) > 1 else ""

    ours = _s(stage.get("ours_s")) + samples(stage, "ours_samples_s")
    for key, name, base, target in (
            ("stage_vs_curl_tar", "  vs curl -o + sha512sum + tar xzf + sync", "curl_tar", TARGET_CURL_TAR),
            ("stage_vs_pacote", "  vs pacote.extract (node)", "pacote", TARGET_PACOTE)):
        ratio = d.get(key)
        if ratio is None:
            rows.append(Row(name, ours, "skipped: " + str(d.get(f"{key}_reason")), "—", f"≤ {target:g}", "n/a"))
        else:
            low = stage.get(f"{key}_min")
            rows.append(Row(name, ours, _s(stage.get(f"{base}_s")) + samples(stage, f"{base}_samples_s"),
                            f"{ratio:.2f} (min {low:.2f})", f"≤ {target:g}", _verdict(ratio <= target)))
    extract = d.get("extract") or {}
    if "extract_vs_tar" in extract:
        def ext(label: str, key: str, ours_key: str, base_key: str, target: str = "") -> None:
            if key not in extract:
                return
            r = extract[key]
            base = extract.get(f"{base_key}_s") or {}
            mine = extract.get(f"{ours_key}_s") or {}
            verdict = "info" if not target else _verdict(r["median"] <= float(target.split()[-1]))
            rows.append(Row(label, _s(mine.get("median")), _s(base.get("median")),
                            f"{r['median']:.2f} (min {r['min']:.2f})", target, verdict))

        ext(f"safe_extract alone vs tar xzf, {extract['tar_gz_mb']:.0f} MB tar.gz", "extract_vs_tar", "ours_gz",
            "tar_xzf", "≤ 1.0")
        ext("  the same without isal (zlib fallback)", "extract_zlib_vs_tar", "ours_gz_zlib", "tar_xzf")
        ext(f"safe_extract of the same tree as tar.zst ({extract['tar_zst_mb']:.0f} MB) vs tar --zstd",
            "extract_zst_vs_tar_zstd", "ours_zst", "tar_zstd")
        ext("  tar.zst vs tar.gz, both safe_extract", "extract_zst_vs_gz", "ours_zst", "ours_gz")
        durable = extract.get("durable_s") or {}
        if durable:
            rows.append(Row("make the extracted tree durable: syncfs / fsync each / os.sync",
                            " / ".join(f"{durable[m]['median']:.2f}" if m in durable else "—"
                                       for m in ("syncfs", "fsync", "sync")) + " s",
                            "", "", "", "info"))
    elif "extract" in d:
        rows.append(Row("extraction alone", "—", str(d.get("extract_vs_tar_median_reason")), "", "", "n/a"))
    peak = d.get("peak_rss_mb")
    memory = d.get("memory") or {}
    for size_mb, rss in (memory.get("peak_rss_mb_by_size") or {}).items():
        rows.append(Row(f"peak RSS of desktop update, {size_mb} MB archive", _s(rss, "MB", 1), "", "",
                        f"≤ {TARGET_RSS_MB:g} MB", _verdict(rss <= TARGET_RSS_MB)))
    if peak is None:
        rows.append(Row("peak RSS (largest archive)", "—", d.get("peak_rss_mb_reason", ""), "", "", "n/a"))
    else:
        spread_mb = memory.get("peak_rss_spread_mb", 0.0)
        rows.append(Row("peak RSS, largest archive / spread over sizes", f"{peak:.1f} MB / {spread_mb:.1f} MB", "",
                        "", f"≤ {TARGET_RSS_MB:g} MB, spread ≤ {TARGET_RSS_SPREAD_MB:g}",
                        _verdict(memory.get("peak_rss_mb_max", peak) <= TARGET_RSS_MB
                                 and spread_mb <= TARGET_RSS_SPREAD_MB)))
    checks = d.get("checks") or {}
    labels = (("npm_up_to_date", "npm check, up to date (If-None-Match)"),
              ("npm_new_version", "npm check, new version (cache present)"),
              ("npm_first", "npm check, first (no cache)"),
              ("feed_up_to_date", "feed check, up to date"),
              ("feed_new_version", "feed check, new version (cache present)"),
              ("feed_first", "feed check, first (bootstrap)"))
    for key, label in labels:
        entry = checks.get(key)
        if not entry:
            continue
        value = f"{entry['round_trips']} req, {entry['wire_bytes']} B"
        if key == "npm_up_to_date":
            ok = entry["round_trips"] == 1 and entry["wire_bytes"] <= TARGET_CHECK_BYTES
            rows.append(Row(label, value, "", "", f"1 req ≤ {TARGET_CHECK_BYTES} B", _verdict(ok)))
        else:
            rows.append(Row(label, value, "", "", "", "info"))
    if d.get("check_bytes_up_to_date") is None:
        rows.append(Row("check cost", "—", str(d.get("check_bytes_up_to_date_reason")), "", "", "n/a"))
    launch = d.get("launch") or {}
    for count, entry in (launch.get("scenarios") or {}).items():
        label = "launch, bundled runtime" if count == "0" else f"launch, {count} version(s) staged"
        rows.append(Row(label + " (to output)", _s(entry["launch_output_s"], "s", 3),
                        _s(entry["direct_ready_s"], "s", 3) + " direct",
                        f"+{entry['overhead_s']:.3f} s", f"≤ +{TARGET_LAUNCH_S:g} s",
                        _verdict(entry["overhead_s"] <= TARGET_LAUNCH_S)))
    detail = (launch.get("scenarios") or {}).get("1") or {}
    if "ready_to_output_s" in detail:
        rows.append(Row("  where it goes (1 staged, from the runtime log)",
                        f"spawn at {detail['shell_spawned_runtime_s']:.3f} s, ready seen "
                        f"{detail['shell_saw_ready_s']:.3f} s, output +{detail['ready_to_output_s']:.3f} s",
                        "", "", "", "info"))
    if launch.get("launch_overhead_spread_s") is not None:
        spread = launch["launch_overhead_spread_s"]
        rows.append(Row("launch overhead spread over 1..50 staged", _s(spread, "s", 3), "", "",
                        f"≤ {TARGET_LAUNCH_SPREAD_S:g} s (flat)", _verdict(spread <= TARGET_LAUNCH_SPREAD_S)))
    if d.get("launch_overhead_s") is None:
        rows.append(Row("launch overhead", "—", str(d.get("launch_overhead_s_reason")), "", "", "n/a"))
    verify = d.get("verify") or {}
    for files, entry in (verify.get("by_files") or {}).items():
        target = f"< {TARGET_VERIFY_MS:g} ms" if files == str(verify.get("largest_files")) else ""
        rows.append(Row(f"launch check, {int(files) // 1000}k-file version (lstat all, hash entry + native)",
                        _s(entry["verify_ms"], "ms", 2),
                        f"{entry['verify_version_dir_ms']:.2f} ms manifest only, {entry['walk_hash_ms']:.0f} ms "
                        "hashing every file", "", target,
                        _verdict(entry["verify_ms"] < TARGET_VERIFY_MS) if target else "info"))
    if d.get("verify_ms_largest") is None:
        rows.append(Row("verification", "—", str(d.get("verify_ms_largest_reason")), "", "", "n/a"))
    delta = d.get("delta") or {}
    if "targets" in delta:
        full_mb = delta["full_archive_bytes"] / 1e6
        rows.append(Row(f"delta A->B: bytes ({delta['b_files']} files, {delta['b_unpacked_mb']} MB; full archive "
                        f"{full_mb:.1f} MB)", f"{delta['delta_bytes']:,} B",
                        f"tufup patch {delta['tufup_patch_bytes']:,} B",
                        f"{delta['delta_bytes_vs_tufup']:.3f}", f"≤ {delta['targets']['delta_bytes_vs_tufup'][0]:g}",
                        _verdict(delta["targets"]["delta_bytes_vs_tufup"][1])))
        for key, label, ours, base in (
                ("delta_apply_vs_tufup", "  apply (download + rebuild + verify) vs tufup download+patch+extract",
                 "ours_apply_s", "tufup_apply_s"),
                ("delta_apply_vs_full_stage", "  apply vs extracting the full archive + hashing",
                 "ours_apply_s", "full_stage_s"),
                ("update_delta_vs_full", "  desktop update via the delta vs the full archive (loopback)",
                 "update_delta_s", "update_full_s"),
                ("update_delta_vs_full_100mbit", "  the same at 100 Mbit/s",
                 "update_delta_100mbit_s", "update_full_100mbit_s")):
            target, ok = delta["targets"].get(key, [None, None])
            rows.append(Row(label, _s(delta[ours]["median"]), _s(delta[base]["median"]),
                            f"{delta[key]:.3f} (min {delta.get(key + '_min', delta[key]):.3f})"
                            if key.startswith("update") else f"{delta[key]:.3f}",
                            f"≤ {target:g}" if target is not None else "", _verdict(ok)))
        rows.append(Row("  peak RSS of the apply", _s(delta["delta_peak_rss_mb"], "MB", 1), "", "",
                        f"≤ {delta['targets']['delta_peak_rss_mb'][0]:g} MB",
                        _verdict(delta["targets"]["delta_peak_rss_mb"][1])))
        rows.append(Row("  rebuilt tree identical to B, byte for byte", str(delta["delta_tree_identical"]), "", "",
                        "True", _verdict(delta["delta_tree_identical"])))
    elif "delta" in d:
        rows.append(Row("delta updates", "—", str(d.get("delta_bytes_vs_tufup_reason")), "", "", "n/a"))


def print_table(report: Report) -> None:
    header = Row("measurement", "value", "baseline", "ratio", "target", "verdict")
    rows = [header, *report.rows]
    cols = ["measurement", "value", "baseline", "ratio", "target", "verdict"]
    widths = {c: max(len(getattr(r, c)) for r in rows) for c in cols}
    for i, row in enumerate(rows):
        print("  ".join(getattr(row, c).ljust(widths[c]) for c in cols).rstrip())
        if i == 0:
            print("  ".join("-" * widths[c] for c in cols))


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def workdir(given: str | None, keep: bool) -> Iterator[Path]:
    if given:
        path = Path(given).resolve()
        path.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="desktop-bench-", dir=path))
    else:
        path = Path(tempfile.mkdtemp(prefix="desktop-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            drop_tree(path)


SECTIONS = ("stage", "extract", "memory", "checks", "launch", "verify", "delta")
DELTA_KEYS = ["delta_bytes_vs_tufup", "delta_apply_vs_tufup", "delta_apply_vs_full_stage", "delta_peak_rss_mb",
              "delta_tree_identical", "update_delta_vs_full", "update_delta_vs_full_100mbit"]


def section(report: Report, name: str, keys: list[str], func: Callable[[], dict[str, Any]],
            only: set[str]) -> None:
    if name not in only:
        for key in keys:
            report.null(key, "not run (--only)")
        return
    start = time.perf_counter()
    log(f"{name}...")
    try:
        result = func()
    except Exception as exc:  # one broken measurement must not hide the others
        reason = f"{type(exc).__name__}: {exc}"
        log(f"{name} failed: {reason}")
        if not isinstance(exc, BenchError):
            traceback.print_exc()
        report.data[name] = {"error": reason}
        for key in keys:
            report.null(key, reason)
        return
    report.data[name] = result
    for key in keys:
        if result.get(key) is None:
            report.null(key, str(result.get(f"{key}_reason") or "not measured"))
        else:
            report.data[key] = result[key]
    log(f"{name} done in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 50 MB / 5k-file archive instead of 208 MB / 12k files (about 2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--runs", type=int, default=None, help="counted rounds per comparison (default 5, at least 5)")
    parser.add_argument("--workdir", metavar="DIR", help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--only", metavar="LIST", help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = set(SECTIONS) if not args.only else {name.strip() for name in args.only.split(",")}
    if not only <= set(SECTIONS):
        parser.error(f"--only takes names from {', '.join(SECTIONS)}")
    if args.runs is not None and args.runs < 5:
        parser.error("--runs must be at least 5: fewer rounds cannot tell the contenders apart")
    # A benchmark stopped with SIGTERM (or SIGHUP) still runs its cleanup: unmount, delete.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda num, frame: sys.exit(128 + num))
    quick = args.quick
    stage_mb, mix = (50.0, QUICK_MIX) if quick else (200.0, FULL_MIX)
    memory_sizes = [stage_mb] if quick else [50.0, stage_mb, 800.0]
    runs = args.runs or 5
    started = time.perf_counter()
    report = Report(quick)
    from desktop.core.archive import engine

    report.data.update(
        mode="quick" if quick else "default",
        environment={
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "shell_version": SHELL_VERSION, "node": tool_version(["node", "--version"]),
            "curl": tool_version(["curl", "--version"]), "tar": tool_version(["tar", "--version"]),
            "gzip_engine": engine(),
        },
    )
    with workdir(args.workdir, args.keep) as work, \
            measurement_fs(work, 2.0 if quick else 6.0) as fs:
        report.data["filesystem"] = {"description": fs.description, "type": fs.fstype, "journaled": fs.journaled,
                                     "loop_image": fs.loop_image}
        log(f"measuring on {fs.description}")
        pacote = ensure_pacote() if "stage" in only else (False, "not run (--only)")
        report.data["environment"]["pacote"] = pacote[1] if pacote[0] else None
        known_rss: dict[float, float] = {}
        shared: dict[str, Published] = {}

        def archive() -> Published:
            if "stage" not in shared:
                (work / "stage").mkdir()
                shared["stage"] = build_archive(work / "stage", f"{stage_mb:g}mb", stage_mb, SEED + int(stage_mb), mix)
                if quick and (shared["stage"].archive_bytes < 50 * MB or shared["stage"].files < 5000):
                    raise BenchError("the quick archive is under 50 MB or 5k files")
            return shared["stage"]

        def stage() -> dict[str, Any]:
            result = measure_stage(fs.path, archive(), runs, pacote)
            known_rss[stage_mb] = result["ours_peak_rss_mb"]
            return result

        def extract() -> dict[str, Any]:
            return measure_extract(fs.path, archive(), runs, quick)

        def memory() -> dict[str, Any]:
            (work / "memory").mkdir()
            return measure_memory(fs.path, work / "memory", memory_sizes, known_rss)

        def checks() -> dict[str, Any]:
            (work / "checks").mkdir()
            return measure_checks(work / "checks")

        def launch() -> dict[str, Any]:
            (work / "launch").mkdir()
            return measure_launch(work / "launch", 2 if quick else 5, [0, 1, 10, 50])

        def verify() -> dict[str, Any]:
            (work / "verify").mkdir()
            return measure_verify(work / "verify", [1000, 10000], 20 if quick else 50)

        section(report, "stage", ["stage_vs_curl_tar", "stage_vs_pacote"], stage, only)
        section(report, "extract", ["extract_vs_tar_median"], extract, only)
        section(report, "memory", ["peak_rss_mb"], memory, only)
        section(report, "checks", ["check_bytes_up_to_date", "check_round_trips_up_to_date"], checks, only)
        section(report, "launch", ["launch_overhead_s"], launch, only)
        section(report, "verify", ["verify_ms_largest"], verify, only)

        def delta() -> dict[str, Any]:
            import delta as delta_bench  # bench/delta.py: the codec against tufup and a full stage

            return delta_bench.run(quick, rounds=runs, work_parent=str(fs.path))

        section(report, "delta", DELTA_KEYS, delta, only)
    report.data["elapsed_s"] = round(time.perf_counter() - started, 1)
    build_rows(report)
    report.data["table"] = [row.__dict__ for row in report.rows]
    print_table(report)
    where = (report.data.get("filesystem") or {}).get("description")
    print(f"\n{report.data['mode']} run, {report.data['elapsed_s']} s, trees on {where}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
