"""Benchmarks of the shell's update and launch paths, against plain tools doing the same job.

    .venv/bin/python bench/run.py [--quick] [--json FILE] [--runs N] [--workdir DIR] [--keep] [--only LIST]

`--workdir /dev/shm` takes the disk out of the comparison (CPU cost only); bench/profile.py runs
the same staging or launch under pyinstrument.

Everything talks only to a loopback server (tests/support/server.py) on 127.0.0.1, works in a
temporary directory and stops on its own (every child process has a timeout). Measurements:

1. stage throughput: a real `desktop update --registry-kind npm` of a generated ~200 MB runtime
   archive (quick: ~10 MB) into a fresh data dir, against `curl -s -o F URL && tar xzf F -C D`
   and against npm's `pacote.extract()` (installed with npm into .cache/bench-node); medians.
2. peak memory (max RSS from wait4) of `desktop update` staging 50/200/800 MB (quick: 10/30 MB).
3. check cost: bytes on the wire and round trips of `desktop check`, npm (conditional 304) and
   a TUF feed made with `desktop keygen` / `desktop publish`, up to date and with a new version.
4. launch overhead: `desktop launch --until-ready --json` until its output, against starting the
   runtime's command directly with the shell's environment, with 0/1/10/50 staged versions.
5. verification cost: `verify_version_dir` of a staged version with 1k and 10k files, against a
   full-tree walk (lstat of everything) and a full hash of every file.

Ratios in the JSON are numbers; a baseline that could not run is null, with `<key>_reason`.
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
from desktop.core.manifest import verify_version_dir  # noqa: E402
from desktop.core.pack import pack_directory  # noqa: E402
from desktop.core.process import build_argv, runtime_env  # noqa: E402
from desktop.core.selection import resolve_target  # noqa: E402
from desktop.core.state import Pointer, write_pointer  # noqa: E402
from desktop.devtools import derive_runtime  # noqa: E402
from tests.support.server import LoopbackServer  # noqa: E402

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
TARGET_CURL_TAR = 1.15
TARGET_PACOTE = 1.0
TARGET_RSS_MB = 80.0
TARGET_RSS_SPREAD_MB = 10.0
TARGET_CHECK_BYTES = 2048
TARGET_LAUNCH_S = 0.5
TARGET_LAUNCH_SPREAD_S = 0.1
TARGET_VERIFY_MS = 50.0

# Share of the unpacked bytes per kind of file, and how well each kind compresses (measured).
LARGE_SHARE, MEDIUM_SHARE = 0.40, 0.35
EXPECTED_ARCHIVE_RATIO = 0.70


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
    json.dump({"seconds": elapsed, "maxrss_kb": usage.ru_maxrss}, fh)
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
    return Run(usage["seconds"], proc.returncode, usage["maxrss_kb"] / 1024, stdout, stderr)


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


def generate_runtime(dest: Path, version: str, archive_bytes: int, seed: int) -> Generated:
    """A runtime (the bundled app plus a node_modules-like tree) whose archive is about `archive_bytes`.

    Mixed like a real runtime: a few large binaries (40% of the bytes), medium binaries of
    64 KB-2 MB (35%), and many small source files of 100 B-64 KB (25%), 8-40 files per package.
    Deterministic for a given seed.
    """
    rnd = random.Random(seed)
    unpacked = int(archive_bytes / EXPECTED_ARCHIVE_RATIO)
    derive_runtime(dest, version)
    pool = _text_pool(rnd, 4 * MB)
    large_total = int(unpacked * LARGE_SHARE)
    medium_total = int(unpacked * MEDIUM_SHARE)
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


def build_archive(work: Path, name: str, archive_mb: float, seed: int) -> Published:
    start = time.perf_counter()
    src = generate_runtime(work / f"src-{name}", VERSION, int(archive_mb * MB), seed)
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


def stage_ours(work: Path, registry: str, tag: str) -> Run:
    data = work / f"ours-{tag}"
    try:
        run = cli("update", "--data-dir", data, "--registry", registry, "--registry-kind", "npm", "--json",
                  timeout=1800).check("desktop update")
        outcome = json.loads(run.stdout.strip().splitlines()[-1]).get("outcome")
        if outcome != "staged" or not (data / "versions" / VERSION / "runtime.json").is_file():
            raise BenchError(f"desktop update did not stage {VERSION}: {run.stdout.strip()}")
        return run
    finally:
        drop_tree(data)


def stage_curl_tar(work: Path, tarball_url: str, tag: str) -> tuple[Run, Run]:
    file = work / f"curl-{tag}.tgz"
    out = work / f"curl-{tag}"
    out.mkdir()
    try:
        fetched = run_timed(["curl", "-s", "-o", str(file), tarball_url], timeout=1800, env=clean_env())
        fetched.check("curl")
        unpacked = run_timed(["tar", "xzf", str(file), "-C", str(out)], timeout=1800, env=clean_env())
        unpacked.check("tar")
        if not (out / "package" / "runtime.json").is_file():
            raise BenchError("curl + tar did not produce package/runtime.json")
        return fetched, unpacked
    finally:
        file.unlink(missing_ok=True)
        drop_tree(out)


def stage_pacote(work: Path, registry: str, tag: str) -> Run:
    dest = work / f"pacote-{tag}"
    cache = work / f"pacote-cache-{tag}"
    try:
        run = run_timed(["node", str(PACOTE_SCRIPT), str(NODE_DIR / "node_modules" / "pacote"),
                         f"{PACKAGE}@{VERSION}", str(dest), registry + "/", str(cache)],
                        timeout=1800, env=clean_env())
        run.check("pacote")
        if not (dest / "runtime.json").is_file():
            raise BenchError("pacote.extract did not produce runtime.json")
        return run
    finally:
        drop_tree(dest)
        drop_tree(cache)


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


def measure_stage(work: Path, archive_mb: float, runs: int, pacote: tuple[bool, str]) -> dict[str, Any]:
    """Throughput of ours vs curl+tar vs pacote (interleaved, one warm-up each), medians."""
    result: dict[str, Any] = {"archive_target_mb": archive_mb, "runs": runs}
    built = build_archive(work, f"{archive_mb:g}mb", archive_mb, SEED + int(archive_mb))
    result.update(archive_mb=round(built.archive_bytes / MB, 2), files=built.files,
                  unpacked_mb=round(built.unpacked_bytes / MB, 2))
    curl_ok = shutil.which("curl") is not None and shutil.which("tar") is not None
    curl_reason = None if curl_ok else "curl or tar not found"
    pacote_ok, pacote_info = pacote
    pacote_reason = None if pacote_ok else pacote_info
    ours: list[Run] = []
    curl: list[float] = []
    curl_parts: list[tuple[float, float]] = []
    curl_rss: list[float] = []
    node: list[Run] = []
    with LoopbackServer() as server:
        doc = server.publish_npm_package(PACKAGE, VERSION, built.archive)
        registry = f"{server.url}/{PACKAGE}"
        tarball = doc["dist"]["tarball"]
        for i in range(runs + 1):
            tag = "warm" if i == 0 else str(i)
            line = []
            settle()
            run = stage_ours(work, registry, tag)
            line.append(f"ours {run.seconds:.2f} s")
            if i:
                ours.append(run)
            if curl_reason is None:
                settle()
                try:
                    fetched, unpacked = stage_curl_tar(work, tarball, tag)
                except BenchError as exc:
                    curl_reason = str(exc)
                else:
                    line.append(f"curl+tar {fetched.seconds + unpacked.seconds:.2f} s")
                    if i:
                        curl.append(fetched.seconds + unpacked.seconds)
                        curl_parts.append((fetched.seconds, unpacked.seconds))
                        curl_rss.append(max(fetched.maxrss_mb, unpacked.maxrss_mb))
            if pacote_reason is None:
                settle()
                try:
                    got = stage_pacote(work, server.url, tag)
                except BenchError as exc:
                    pacote_reason = str(exc)
                else:
                    line.append(f"pacote {got.seconds:.2f} s")
                    if i:
                        node.append(got)
            log(f"  stage run {tag}: " + ", ".join(line))
    built.archive.unlink(missing_ok=True)
    ours_s = median([r.seconds for r in ours])
    result.update(
        ours_s=round(ours_s, 3), ours_samples_s=[round(r.seconds, 3) for r in ours],
        ours_mb_per_s=round(built.archive_bytes / MB / ours_s, 1),
        ours_peak_rss_mb=round(max(r.maxrss_mb for r in ours), 1),
    )
    if curl_reason is None and curl:
        result.update(curl_tar_s=round(median(curl), 3), curl_tar_samples_s=[round(s, 3) for s in curl],
                      curl_s=round(median([c for c, _ in curl_parts]), 3),
                      tar_s=round(median([t for _, t in curl_parts]), 3),
                      curl_tar_peak_rss_mb=round(max(curl_rss), 1),
                      stage_vs_curl_tar=round(ours_s / median(curl), 3))
    else:
        result.update(curl_tar_s=None, stage_vs_curl_tar=None, stage_vs_curl_tar_reason=curl_reason)
    if pacote_reason is None and node:
        pacote_s = median([r.seconds for r in node])
        result.update(pacote_s=round(pacote_s, 3), pacote_samples_s=[round(r.seconds, 3) for r in node],
                      pacote_peak_rss_mb=round(max(r.maxrss_mb for r in node), 1),
                      stage_vs_pacote=round(ours_s / pacote_s, 3))
    else:
        result.update(pacote_s=None, stage_vs_pacote=None, stage_vs_pacote_reason=pacote_reason)
    return result


def measure_memory(work: Path, sizes_mb: list[float], known: dict[float, float]) -> dict[str, Any]:
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
                run = stage_ours(work, f"{server.url}/{PACKAGE}", f"mem-{size:g}")
        finally:
            built.archive.unlink(missing_ok=True)
        log(f"  memory {size:g} MB: {run.maxrss_mb:.1f} MB max RSS ({run.seconds:.1f} s)")
        by_size[f"{size:g}"] = round(run.maxrss_mb, 1)
    peak = max(by_size.values())
    return {"peak_rss_mb": peak, "peak_rss_mb_by_size": by_size,
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
    target = resolve_target(config, repair=False)
    argv, env = build_argv(target), runtime_env(config, target)
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
    rnd = random.Random(SEED)
    pool = _text_pool(rnd, MB)
    result: dict[str, Any] = {}
    for files in counts:
        directory = work / f"verify-{files}"
        _make_version_dir(directory, files, rnd, pool)

        def verify(directory: Path = directory) -> object:
            return verify_version_dir(directory, expected=Version(VERSION), shell_version=SHELL_VERSION,
                                      native_root=NATIVE_ROOT)

        verify()
        checks = _time_ms(verify, repeat)
        walks = _time_ms(lambda directory=directory: _walk_stat(directory), max(3, repeat // 10))
        hashes = _time_ms(lambda directory=directory: _walk_hash(directory), 3)
        entries = _walk_stat(directory)
        result[str(files)] = {
            "entries": entries,
            "verify_ms": round(median(checks), 3), "verify_max_ms": round(max(checks), 3),
            "walk_stat_ms": round(median(walks), 2), "walk_hash_ms": round(median(hashes), 2),
        }
        log(f"  verify {files} files: {median(checks):.2f} ms (walk {median(walks):.1f} ms, "
            f"hash {median(hashes):.1f} ms)")
        drop_tree(directory)
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
    if stage:
        rows.append(Row(f"stage {size} archive ({stage.get('files')} files), median of {runs}",
                        _s(stage.get("ours_s")) + f" ({stage.get('ours_mb_per_s')} MB/s)"))

    def spread(samples: str) -> str:
        values = stage.get(samples) or []
        return f" [{min(values):.2f}–{max(values):.2f}]" if len(values) > 1 else ""

    ours = _s(stage.get("ours_s")) + spread("ours_samples_s")
    for key, name, base, target in (("stage_vs_curl_tar", "  vs curl -o + tar xzf", "curl_tar", TARGET_CURL_TAR),
                                    ("stage_vs_pacote", "  vs pacote.extract (node)", "pacote", TARGET_PACOTE)):
        ratio = d.get(key)
        if ratio is None:
            rows.append(Row(name, ours, "skipped: " + str(d.get(f"{key}_reason")), "—", f"≤ {target:g}", "n/a"))
        else:
            rows.append(Row(name, ours, _s(stage.get(f"{base}_s")) + spread(f"{base}_samples_s"), f"{ratio:.2f}",
                            f"≤ {target:g}", _verdict(ratio <= target)))
    peak = d.get("peak_rss_mb")
    memory = d.get("memory") or {}
    for size_mb, rss in (memory.get("peak_rss_mb_by_size") or {}).items():
        rows.append(Row(f"peak RSS of desktop update, {size_mb} MB archive", _s(rss, "MB", 1), "", "",
                        f"≤ {TARGET_RSS_MB:g} MB", _verdict(rss <= TARGET_RSS_MB)))
    if peak is None:
        rows.append(Row("peak RSS (max over sizes)", "—", d.get("peak_rss_mb_reason", ""), "", "", "n/a"))
    else:
        spread = memory.get("peak_rss_spread_mb", 0.0)
        rows.append(Row("peak RSS (max over sizes) / spread", f"{peak:.1f} MB / {spread:.1f} MB", "", "",
                        f"≤ {TARGET_RSS_MB:g} MB, spread ≤ {TARGET_RSS_SPREAD_MB:g}",
                        _verdict(peak <= TARGET_RSS_MB and spread <= TARGET_RSS_SPREAD_MB)))
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
        ratio = entry["verify_ms"] / entry["walk_stat_ms"] if entry["walk_stat_ms"] else 0
        target = f"< {TARGET_VERIFY_MS:g} ms" if files == str(verify.get("largest_files")) else ""
        rows.append(Row(f"verify_version_dir, {int(files) // 1000}k files", _s(entry["verify_ms"], "ms", 2),
                        f"{entry['walk_stat_ms']:.1f} ms walk, {entry['walk_hash_ms']:.0f} ms hash",
                        f"{ratio:.3f}", target, _verdict(entry["verify_ms"] < TARGET_VERIFY_MS) if target else "info"))
    if d.get("verify_ms_largest") is None:
        rows.append(Row("verification", "—", str(d.get("verify_ms_largest_reason")), "", "", "n/a"))


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


SECTIONS = ("stage", "memory", "checks", "launch", "verify")


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
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (about a minute)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--runs", type=int, default=None, help="timed stage runs (default 3, quick 1)")
    parser.add_argument("--workdir", metavar="DIR", help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--only", metavar="LIST", help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = set(SECTIONS) if not args.only else {name.strip() for name in args.only.split(",")}
    if not only <= set(SECTIONS):
        parser.error(f"--only takes names from {', '.join(SECTIONS)}")
    quick = args.quick
    stage_mb = 10.0 if quick else 200.0
    memory_sizes = [10.0, 30.0] if quick else [50.0, 200.0, 800.0]
    runs = args.runs or (1 if quick else 3)
    started = time.perf_counter()
    report = Report(quick)
    report.data.update(
        mode="quick" if quick else "default",
        environment={
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "shell_version": SHELL_VERSION, "node": tool_version(["node", "--version"]),
            "curl": tool_version(["curl", "--version"]), "tar": tool_version(["tar", "--version"]),
        },
    )
    with workdir(args.workdir, args.keep) as work:
        pacote = ensure_pacote() if "stage" in only else (False, "not run (--only)")
        report.data["environment"]["pacote"] = pacote[1] if pacote[0] else None
        known_rss: dict[float, float] = {}

        def stage() -> dict[str, Any]:
            (work / "stage").mkdir()
            result = measure_stage(work / "stage", stage_mb, runs, pacote)
            known_rss[stage_mb] = result["ours_peak_rss_mb"]
            return result

        def memory() -> dict[str, Any]:
            (work / "memory").mkdir()
            return measure_memory(work / "memory", memory_sizes, known_rss)

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
        section(report, "memory", ["peak_rss_mb"], memory, only)
        section(report, "checks", ["check_bytes_up_to_date", "check_round_trips_up_to_date"], checks, only)
        section(report, "launch", ["launch_overhead_s"], launch, only)
        section(report, "verify", ["verify_ms_largest"], verify, only)
    report.data["elapsed_s"] = round(time.perf_counter() - started, 1)
    build_rows(report)
    report.data["table"] = [row.__dict__ for row in report.rows]
    print_table(report)
    print(f"\n{report.data['mode']} run, {report.data['elapsed_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report.data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
