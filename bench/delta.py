"""Benchmark of delta updates: our delta codec against tufup's patches and against a full stage.

    .venv/bin/python bench/delta.py [--quick] [--json FILE] [--rounds N] [--workdir DIR] [--keep]

Scenario (default size; --quick is the same at one fifth: 1,600 small files + 3 x 6 MB):
a ~150 MB runtime of 8,000 small source files (python-like lines, lognormal sizes around
4 KB) and 3 x 30 MB binaries (machine-code-like: a skewed token stream with embedded
addresses, repeated idioms and padding; gzip -9 keeps ~44 %, zstd -19 ~32 %, bzip2 ~40 %, close
to a real shared library here: 40 %, 35 %, 40 %). Four
releases R1 -> R2 -> A -> B, each changing ~2 % of the small files (a few lines each), one
binary in a few regions (code rewritten, inserted, deleted, a patched table), adding ~1 % and
removing ~0.5 % of the files. B has deltas from A, R2 and R1.

Contenders, each a fresh subprocess measured from fork to reap (wall time and max RSS via
wait4), interleaved with the order rotated every round:

* ours: stream the A->B delta from a loopback HTTP server (httpx) straight into
  `apply_delta` into a fresh directory; every file is checked against B's manifest while
  written, so this includes verification;
* tufup (pinned, installed into its own venv under .cache/ by this script): a real tufup
  repository (`Repository.initialize`, `add_bundle`, `publish_changes`) served from the same
  loopback server, and its client as far as it goes on Linux: `Client.check_for_updates()`
  then `Client.download_and_apply_update(skip_confirmation=True, install=<no-op>)`, which
  downloads the patch (tuf), patches (`Patcher.patch_and_verify`: gunzip A, bsdiff4 patch,
  verify, gzip B) and extracts (`shutil.unpack_archive`). Its own `install_update` refuses
  Linux and would only move files. Compared: its download + patch + extract time, timed
  inside the process (so its interpreter start and metadata refresh are NOT counted against
  it), and the whole process's max RSS;
* full stage: `safe_extract` of B's tar.gz plus hashing every file against B's manifest
  (`verify_tree`) -- a proxy for the stager's full-archive path (no download, no fsync).

Ours and the full stage are compared on the whole subprocess (start, imports, work); the time
inside each process after its imports is reported too (`*_work_s`), since a running shell has
its modules loaded already.

The real thing: `desktop update` from A (staged) to B through a signed feed on 127.0.0.1
that `FeedPublisher` made, once with the delta it publishes and once from the same releases
published without deltas, each a fresh subprocess from a fresh copy of the data dir
(`update_delta_vs_full`), then the same two over a link of 100 Mbit/s (the server sends
B's archive and the delta at that rate; `update_delta_vs_full_100mbit`).

Publishing: `pack_directory(B)` (the plain publish) against the same plus the manifest of B
and three deltas, each from an old release *archive* (extracted with safe_extract and scanned,
since a feed keeps archives, not trees). tufup's `add_bundle(B)` + `publish_changes` is
measured once (it is slow).

`delta_tree_identical` is checked by comparing the rebuilt tree with B byte for byte
(types, modes, link targets, contents).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from desktop.core.delta import scan_manifest  # noqa: E402
from desktop.core.pack import pack_directory  # noqa: E402
from desktop.core.tree import remove_tree, walk  # noqa: E402
from tests.support.server import LoopbackServer  # noqa: E402

PY = sys.executable
MB = 1024 * 1024
SEED = 20_261_214
TUFUP_VERSION = "0.10.0"
TUFUP_VENV = REPO / ".cache" / "bench-tufup"
VERSIONS = ("0.7.0", "0.8.0", "0.9.0", "1.0.0")  # R1, R2, A, B

TARGET_BYTES = 0.8
TARGET_APPLY_TUFUP = 0.3
TARGET_APPLY_FULL = 0.5
TARGET_RSS_MB = 96.0
TARGET_PUBLISH = 3.0


_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"bench-delta [{time.perf_counter() - _T0:6.1f} s]: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A measurement could not be made."""


# --------------------------------------------------------------------------- processes

# Forked from this small fresh interpreter, not from the benchmark: a child's ru_maxrss starts
# at the high-water RSS of the process it was forked from.
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
with open(out, "w") as fh:
    json.dump({"seconds": time.perf_counter() - start, "maxrss_kb": usage.ru_maxrss}, fh)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass
class Run:
    seconds: float
    maxrss_mb: float
    stdout: str


def run_measured(argv: list[str], *, timeout: float = 1800, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-delta-run-") as tmp:
        report = Path(tmp) / "usage.json"
        proc = subprocess.Popen([PY, "-I", "-S", "-c", _MEASURE, str(report), *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or child_env(), cwd=cwd,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BenchError(f"{' '.join(argv[:3])} timed out") from None
        if proc.returncode != 0:
            tail = " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-4:])
            raise BenchError(f"{Path(argv[0]).name} {' '.join(argv[1:3])[:80]} failed ({proc.returncode}): {tail}")
        usage = json.loads(report.read_text())
    return Run(usage["seconds"], usage["maxrss_kb"] / 1024, out.decode("utf-8", "replace"))


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"} and not k.startswith("DESKTOP_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = str(REPO)
    return env


def last_json(run: Run) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return obj


def filesystem_of(path: Path) -> str:
    done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True,
                          check=False)
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- content


class Content:
    """Deterministic generators of source-like text and machine-code-like binaries."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        words = [self._word() for _ in range(6000)]
        weights = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(len(words))))
        templates = ["{i}def {a}_{b}(self, {c}, {d}=None):\n", "{i}return self.{a}[{b}]\n",
                     "{i}{a} = {b}.{c}({d})\n", "{i}if {a} is not None and {b}:\n", "{i}for {a} in {b}.{c}():\n",
                     "{i}import {a}.{b}\n", "{i}# {a} {b} {c} {d}\n", "{i}raise {a}Error(\"{b} {c}\")\n",
                     "{i}self.{a} = {b}\n", "\n", "{i}class {a}{b}({c}):\n", "{i}yield {a}({b}, {c})\n"]
        self.words, self.word_weights, self.templates = words, weights, templates
        common = []  # blank lines, imports, closing idioms: the lines real source files share
        for _ in range(300):
            pick = rnd.choices(words, cum_weights=weights, k=4)
            indent = " " * (4 * rnd.choice((0, 1, 2)))
            common.append(rnd.choice(templates).format(i=indent, a=pick[0], b=pick[1], c=pick[2], d=pick[3]))
        self.common = common
        # Frequent opcodes are short: sorting keeps the mix (and so the ratio) the same for any seed.
        tokens = sorted((rnd.randbytes(rnd.choice((1, 2, 2, 3, 3, 4, 5, 6, 7, 8))) for _ in range(3000)), key=len)
        self.tokens = tokens
        self.token_weights = list(itertools.accumulate(1 / (i + 1) ** 1.8 for i in range(len(tokens))))

    def _word(self) -> str:
        return "".join(self.rnd.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(self.rnd.randint(2, 12)))

    def text(self, size: int) -> bytes:
        """Python-like source: most lines fresh (shared words, not shared lines), some common ones."""
        rnd = self.rnd
        out: list[str] = []
        length = 0
        while length < size:
            n = max(8, (size - length) // 38 + 1)
            words = rnd.choices(self.words, cum_weights=self.word_weights, k=4 * n)
            indents = rnd.choices((0, 4, 4, 8, 8, 8, 12), k=n)
            templates = rnd.choices(self.templates, k=n)
            for j in range(n):
                if rnd.random() < 0.3:
                    line = rnd.choice(self.common)
                else:
                    a, b, c, d = words[4 * j:4 * j + 4]
                    line = templates[j].format(i=" " * indents[j], a=a, b=b, c=c, d=d)
                out.append(line)
                length += len(line)
        return "".join(out).encode()[:size]

    def code(self, size: int, context: bytes = b"") -> bytes:
        """Machine-code-like: skewed opcodes, embedded addresses, copied idioms, some padding.

        Idioms are copied from the last 64 KB generated, `context` included: new code added to
        a binary resembles the code around it (same compiler, same compilation unit).

        Measured on 4 MB: gzip -9 keeps 44 %, zstd -19 32 %, bzip2 40 % (libcrypto.so.3 here:
        40 %, 35 %, 40 %): LZ matches matter as they do in real code.
        """
        rnd = self.rnd
        out = bytearray(context[-70000:])
        skip = len(out)
        size += skip
        while len(out) < size:
            toks = rnd.choices(self.tokens, cum_weights=self.token_weights, k=4000)
            for j in range(0, len(toks), 11):
                toks[j] = (0x400000 + rnd.randrange(1 << 20)).to_bytes(4, "little")
            out += b"".join(toks)
            if len(out) > 70000:
                for _ in range(100):  # prologues, inlined helpers: copies of recent sequences
                    start = len(out) - rnd.randrange(1000, 65536)
                    out += out[start:start + rnd.randint(12, 96)]
            if rnd.random() < 0.02:
                out += bytes(rnd.randrange(64, 4096))
        return bytes(out[skip:size])


@dataclass
class Scale:
    files: int
    binary_bytes: int


def generate_release(dest: Path, version: str, scale: Scale, content: Content) -> None:
    rnd = content.rnd
    (dest / "app").mkdir(parents=True)
    (dest / "lib").mkdir()
    (dest / "runtime.json").write_text(json.dumps({"name": "bench-runtime", "version": version,
                                                   "entry": "app/main.py"}))
    (dest / "app" / "main.py").write_bytes(content.text(3000))
    for i in range(3):
        path = dest / "lib" / f"libruntime-{i}.so"
        path.write_bytes(content.code(scale.binary_bytes))
        path.chmod(0o755)
    written = 1
    package = 0
    while written < scale.files:
        pkg = dest / "site-packages" / f"pkg_{package:04d}"
        (pkg / "sub").mkdir(parents=True)
        for j in range(min(rnd.randint(8, 40), scale.files - written)):
            size = int(min(256 * 1024, max(100, rnd.lognormvariate(math.log(4000), 1.1))))
            (pkg / ("sub" if j % 4 == 3 else "") / f"module_{j:02d}.py").write_bytes(content.text(size))
            written += 1
        package += 1
    os.symlink("libruntime-0.so", dest / "lib" / "libruntime.so")


def derive_release(prev: Path, dest: Path, version: str, step: int, content: Content) -> dict[str, int]:
    """The next release: ~2 % of small files edited, one binary changed in a few regions, files added/removed."""
    rnd = content.rnd
    shutil.copytree(prev, dest, symlinks=True)  # copy2 keeps mtimes, so tufup's tar headers stay stable
    small = sorted(p for p in (dest / "site-packages").rglob("*.py"))
    changed = rnd.sample(small, max(1, len(small) // 50))
    for path in changed:
        lines = path.read_bytes().split(b"\n")
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(len(lines))
            if rnd.random() < 0.5:
                lines[at] = content.text(60).replace(b"\n", b" ")
            else:
                lines.insert(at, content.text(80).replace(b"\n", b" "))
        path.write_bytes(b"\n".join(lines))
    removed = rnd.sample([p for p in small if p not in changed], max(1, len(small) // 200))
    for path in removed:
        path.unlink()
    added = 0
    for _ in range(max(1, len(small) // 100)):
        pkg = rnd.choice(sorted((dest / "site-packages").iterdir()))
        (pkg / f"added_{version.replace('.', '_')}_{added}.py").write_bytes(content.text(rnd.randint(500, 12000)))
        added += 1
    binary = dest / "lib" / f"libruntime-{step % 3}.so"
    data = bytearray(binary.read_bytes())
    n = len(data)
    data[n // 5:n // 5 + 48 * 1024] = content.code(48 * 1024, bytes(data[n // 5 - 70000:n // 5]))  # rewritten
    data[n // 2:n // 2] = content.code(24 * 1024, bytes(data[n // 2 - 70000:n // 2]))  # new code
    del data[4 * n // 5:4 * n // 5 + 8 * 1024]  # removed code
    table = n // 3
    for _ in range(200):  # a patched table: scattered 4-byte values
        at = table + rnd.randrange(256 * 1024)
        data[at:at + 4] = rnd.randbytes(4)
    binary.write_bytes(bytes(data))
    manifest = json.loads((dest / "runtime.json").read_text())
    manifest["version"] = version
    (dest / "runtime.json").write_text(json.dumps(manifest))
    return {"changed": len(changed), "removed": len(removed), "added": added}


# --------------------------------------------------------------------------- tufup

_TUFUP_DRIVER = r'''
import json, pathlib, shutil, sys, time
mode = sys.argv[1]
if mode == "publish":
    from tufup.repo import Repository
    repo_dir, keys_dir, bundle, version = sys.argv[2:6]
    repo = Repository(app_name="bench", repo_dir=repo_dir, keys_dir=keys_dir)
    if pathlib.Path(repo_dir, "metadata", "root.json").exists():
        repo._load_keys_and_roles(create_keys=False)  # what Repository.from_config does; initialize() would prompt
    else:
        repo.initialize()
    start = time.perf_counter()
    repo.add_bundle(new_bundle_dir=bundle, new_version=version)
    repo.publish_changes(private_key_dirs=[keys_dir])
    print(json.dumps({"seconds": time.perf_counter() - start}))
elif mode == "apply":
    import tufup.client as tc
    client_dir, url, current = pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    phases = {}
    def timed(name, func):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return wrapper
    tc.Patcher.patch_and_verify = timed("patch", tc.Patcher.patch_and_verify)
    tc.shutil.unpack_archive = timed("extract", shutil.unpack_archive)
    tc.Client._download_updates = timed("download", tc.Client._download_updates)
    start = time.perf_counter()
    client = tc.Client(app_name="bench", app_install_dir=client_dir / "install", current_version=current,
                       metadata_dir=client_dir / "metadata", metadata_base_url=url + "/metadata/",
                       target_dir=client_dir / "targets", target_base_url=url + "/targets/",
                       extract_dir=client_dir / "extract", refresh_required=False)
    new = client.check_for_updates()
    phases["check"] = time.perf_counter() - start
    if new is None or not all(t.is_patch for t in client.new_targets):
        raise SystemExit(f"tufup did not choose a patch update: {client.new_targets}")
    patch = sum(t.length for t in client.new_targets.values())
    client.download_and_apply_update(skip_confirmation=True, install=lambda **kwargs: None)
    if not (client_dir / "extract" / "runtime.json").exists():
        raise SystemExit("tufup did not extract the update")
    print(json.dumps({"phases": phases, "patch_bytes": patch}))
'''


def tufup_python() -> Path:
    python = TUFUP_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('tufup'))"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == TUFUP_VERSION:
            return python
    log(f"installing tufup {TUFUP_VERSION} into {TUFUP_VENV}")
    TUFUP_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TUFUP_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"tufup=={TUFUP_VERSION}"], check=True, capture_output=True)
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"tufup {TUFUP_VERSION} could not be installed: {done.stderr.strip()[-300:]}")
    return python


# --------------------------------------------------------------------------- our side

_OURS_APPLY = r'''
import hashlib, json, sys, time
from pathlib import Path
import httpx
from desktop.core.delta import apply_delta, parse_manifest
url, base, base_manifest, target_digest, dest, delta_sha = sys.argv[1:7]
start = time.perf_counter()  # after the imports: a shell has them loaded already
manifest = parse_manifest(Path(base_manifest).read_bytes())
digest = hashlib.sha256()
with httpx.Client(trust_env=False) as client, client.stream("GET", url) as response:
    response.raise_for_status()
    chunks = response.iter_raw(256 * 1024)
    pending = memoryview(b"")
    def read(n):
        global pending
        if not pending:
            block = next(chunks, b"")
            digest.update(block)
            pending = memoryview(block)
        out, pending = bytes(pending[:n]), pending[n:]
        return out
    stats = apply_delta(read, base, manifest, target_digest, dest)
if digest.hexdigest() != delta_sha:  # the signed length/digest of the delta target
    raise SystemExit("delta digest mismatch")
print(json.dumps({"seconds": time.perf_counter() - start, "files": stats.files, "copied": stats.files_copied,
                  "reflinked": stats.files_reflinked, "delta_bytes": stats.delta_bytes}))
'''

_FULL_STAGE = r'''
import json, sys, time
from pathlib import Path
from desktop.core.archive import safe_extract
from desktop.core.delta import parse_manifest, verify_tree
archive, manifest, dest = sys.argv[1:4]
start = time.perf_counter()
target = parse_manifest(Path(manifest).read_bytes())
safe_extract(Path(archive), Path(dest))
problems = verify_tree(dest, target)
if problems:
    raise SystemExit(f"full stage differs: {problems[:3]}")
print(json.dumps({"seconds": time.perf_counter() - start}))
'''

_PUBLISH = r'''
import json, sys, tempfile, time
from pathlib import Path
from desktop.core.archive import safe_extract
from desktop.core.delta import build_delta, scan_manifest, should_publish
from desktop.core.pack import pack_directory
from desktop.core.tree import remove_tree
tree, out_dir, version = sys.argv[1:4]
bases = [(sys.argv[i], sys.argv[i + 1]) for i in range(4, len(sys.argv), 2)]
out = Path(out_dir)
archive = out / f"bench-{version}.tar.gz"
pack_directory(Path(tree), archive)
result = {"full_bytes": archive.stat().st_size, "deltas": []}
if bases:
    target = scan_manifest(tree)
    (out / f"bench-{version}.files.json").write_bytes(target.to_bytes())
    for base_version, base_archive in bases:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            old = Path(tmp) / "old"
            safe_extract(Path(base_archive), old)
            stats = build_delta(old, scan_manifest(old), tree, target, out / f"bench-{base_version}-{version}.delta",
                                base_version=base_version, target_version=version)
            remove_tree(old)
        result["deltas"].append({"base": base_version, "bytes": stats.delta_bytes, "seconds": stats.seconds,
                                 "publish": should_publish(stats.delta_bytes, result["full_bytes"]),
                                 "pieces": stats.pieces})
print(json.dumps(result))
'''


def same_tree(x: Path, y: Path) -> bool:
    def entries(root: Path) -> dict[str, tuple[str, int, str]]:
        out: dict[str, tuple[str, int, str]] = {}
        for e in walk(root):
            if e.is_link:
                out[e.rel] = ("link", 0, os.readlink(e.path))
            elif e.is_dir:
                out[e.rel] = ("dir", 0, "")
            else:
                out[e.rel] = ("file", stat.S_IMODE(e.st.st_mode), "")
        return out

    ex, ey = entries(x), entries(y)
    ex_norm = {k: (t, 0o755 if m & 0o111 else (0o644 if t == "file" else 0), s) for k, (t, m, s) in ex.items()}
    ey_norm = {k: (t, 0o755 if m & 0o111 else (0o644 if t == "file" else 0), s) for k, (t, m, s) in ey.items()}
    if ex_norm != ey_norm:
        return False
    return all(_same_bytes(x / rel, y / rel) for rel, (kind, _, _) in ex.items() if kind == "file")


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ba, bb = fa.read(MB), fb.read(MB)
            if ba != bb:
                return False
            if not ba:
                return True


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def summary(samples: list[float]) -> dict[str, Any]:
    return {"min": round(min(samples), 3), "median": round(statistics.median(samples), 3),
            "samples": [round(s, 3) for s in samples]}


# --------------------------------------------------------------------------- the real update

UPDATE_VERSIONS = ("5.0.0", "5.1.0")  # A and B again, newer than the app's bundled runtime
LINK_MBIT = 100  # the second pair of updates downloads at this rate (a good home connection)


def _as_version(tree: Path, dest: Path, version: str) -> Path:
    """`tree` hard-linked into `dest` with runtime.json naming `version`."""
    shutil.copytree(tree, dest, symlinks=True, copy_function=os.link)
    manifest = json.loads((dest / "runtime.json").read_text())
    (dest / "runtime.json").unlink()
    (dest / "runtime.json").write_text(json.dumps({**manifest, "version": version}))
    return dest


def measure_update(work: Path, a_tree: Path, b_tree: Path, rounds: int) -> dict[str, Any]:
    """`desktop update` from A to B through a real signed feed on 127.0.0.1, in a fresh subprocess:
    once from a feed that publishes a delta A -> B, once from the same releases without deltas.
    Both start from a data dir with A staged (copied fresh every round, then sync) and do the
    whole update: check, download, rebuild or extract, verify, record, sync, rename, pointer."""
    from desktop.core.keys import generate, load_signer
    from desktop.core.publisher import FeedPublisher

    key = generate(work / "update-keys" / "feed.key")
    signer = load_signer(key.private_path)
    a_dir = _as_version(a_tree, work / "update-a", UPDATE_VERSIONS[0])
    b_dir = _as_version(b_tree, work / "update-b", UPDATE_VERSIONS[1])
    kinds = ("delta", "full")
    result: dict[str, Any] = {}
    with LoopbackServer() as server:
        def argv(kind: str, data: Path, link: bool = False) -> list[str]:
            feed = f"{server.url}/{kind}-link" if link else f"{server.url}/{kind}"
            return [PY, "-m", "desktop", "update", "--data-dir", str(data), "--registry", feed,
                    "--registry-kind", "feed", "--public-key", key.public, "--json"]

        bases: dict[str, Path] = {}
        for kind in kinds:
            publisher = FeedPublisher(work / f"feed-{kind}")
            publisher.delta_bases = 3 if kind == "delta" else 0
            publisher.publish(a_dir, [signer])
            server.serve_directory(f"/{kind}/", publisher.layout.root)
            server.serve_directory(f"/{kind}-link/", publisher.layout.root)
            bases[kind] = work / f"update-base-{kind}"
            staged = last_json(run_measured(argv(kind, bases[kind])))
            if staged.get("outcome") != "staged":
                raise BenchError(f"staging A from the {kind} feed: {staged}")
            log(f"publishing B to the {kind} feed")
            started = time.perf_counter()
            publisher.publish(b_dir, [signer])
            result[f"publish_b_{kind}_s"] = round(time.perf_counter() - started, 2)
        # The same two updates again over a link of LINK_MBIT: B's archive and the delta served at that rate.
        chunk = 64 * 1024
        for kind in kinds:
            for target in (work / f"feed-{kind}" / "targets").iterdir():
                if UPDATE_VERSIONS[1] in target.name:
                    server.fault(f"/{kind}-link/targets/{target.name}", "slow", chunk=chunk,
                                 delay=chunk * 8 / (LINK_MBIT * 1e6))
        contenders = [(kind, link) for link in (False, True) for kind in kinds]
        samples: dict[str, list[float]] = {}
        rss: dict[str, list[float]] = {}
        for i in range(rounds):
            order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
            log(f"update round {i + 1}/{rounds}")
            for kind, link in order:
                name = f"{kind}_{LINK_MBIT}mbit" if link else kind
                data = work / f"update-run-{kind}"
                remove_tree(data)
                shutil.copytree(bases[kind], data, symlinks=True)
                os.sync()
                r = run_measured(argv(kind, data, link))
                out = last_json(r)
                if out.get("outcome") != "staged" or out.get("delta") is not (kind == "delta"):
                    raise BenchError(f"the {name} update did not stage as expected: {out}")
                samples.setdefault(name, []).append(r.seconds)
                rss.setdefault(name, []).append(r.maxrss_mb)
                result[f"update_{kind}_bytes"] = out.get("bytes_downloaded")
                remove_tree(data)
    for name, values in samples.items():
        result[f"update_{name}_s"] = summary(values)
        result[f"update_{name}_peak_rss_mb"] = round(max(rss[name]), 1)
    for suffix in ("", f"_{LINK_MBIT}mbit"):
        ratios = [d / f for d, f in zip(samples[f"delta{suffix}"], samples[f"full{suffix}"], strict=True)]
        result[f"update_delta_vs_full{suffix}"] = round(statistics.median(ratios), 3)
        result[f"update_delta_vs_full{suffix}_min"] = round(min(ratios), 3)
    for path in (a_dir, b_dir, *bases.values(), work / "feed-delta", work / "feed-full"):
        remove_tree(path)
    return result


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def workdir(given: str | None, keep: bool) -> Iterator[Path]:
    parent = Path(given).resolve() if given else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="desktop-bench-delta-", dir=parent))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            remove_tree(path)


def run(quick: bool, *, rounds: int | None = None, work_parent: str | None = None,
        keep: bool = False) -> dict[str, Any]:
    """The whole benchmark; a dict of figures (see the module docstring)."""
    scale = Scale(1600, 6 * MB) if quick else Scale(8000, 30 * MB)
    rounds = rounds or 5
    started = time.perf_counter()
    report: dict[str, Any] = {"mode": "quick" if quick else "default", "rounds": rounds, "scale": {
        "small_files": scale.files, "binaries": 3, "binary_mb": scale.binary_bytes / MB}}
    with workdir(work_parent, keep) as work:
        report["filesystem"] = filesystem_of(work)
        report["environment"] = {"python": platform.python_version(), "platform": platform.platform(),
                                 "cpus": os.cpu_count(), "tufup": TUFUP_VERSION}
        tufup = tufup_python()
        log(f"generating releases in {work} ({report['filesystem']})")
        content = Content(random.Random(SEED))
        trees = [work / f"tree-{v}" for v in VERSIONS]
        generate_release(trees[0], VERSIONS[0], scale, content)
        changes = [derive_release(trees[i - 1], trees[i], VERSIONS[i], i, content) for i in range(1, len(VERSIONS))]
        report["changes_a_to_b"] = changes[-1]
        a_tree, b_tree = trees[-2], trees[-1]
        a_version, b_version = VERSIONS[-2], VERSIONS[-1]
        files, unpacked = 0, 0
        for e in walk(b_tree):
            if e.is_file:
                files += 1
                unpacked += e.st.st_size
        report["b_files"], report["b_unpacked_mb"] = files, round(unpacked / MB, 1)
        feed = work / "feed"
        feed.mkdir()
        for version, tree in zip(VERSIONS[:-1], trees[:-1], strict=True):
            pack_directory(tree, feed / f"bench-{version}.tar.gz")
        manifests = work / "manifests"
        manifests.mkdir()
        (manifests / "a.json").write_bytes(scan_manifest(a_tree).to_bytes())
        b_manifest = scan_manifest(b_tree)
        (manifests / "b.json").write_bytes(b_manifest.to_bytes())

        log("publishing B with 3 deltas once (the deltas every contender uses)")
        publish_args = [str(b_tree), str(feed), b_version]
        for version in reversed(VERSIONS[:-1]):
            publish_args += [version, str(feed / f"bench-{version}.tar.gz")]
        published = last_json(run_measured([PY, "-c", _PUBLISH, *publish_args]))
        report["full_archive_bytes"] = published["full_bytes"]
        report["deltas"] = published["deltas"]
        delta = feed / f"bench-{a_version}-{b_version}.delta"
        delta_bytes = delta.stat().st_size

        log("tufup: repository with A, then B (archive + bsdiff patch), measured once")
        repo, keys = work / "tufup-repo", work / "tufup-keys"
        driver = work / "tufup_driver.py"
        driver.write_text(_TUFUP_DRIVER)
        # tufup writes its .tufup-repo-config into the working directory
        run_measured([str(tufup), str(driver), "publish", str(repo), str(keys), str(a_tree), a_version], cwd=work)
        tufup_publish = run_measured([str(tufup), str(driver), "publish", str(repo), str(keys), str(b_tree), b_version],
                                     cwd=work)
        patch = repo / "targets" / f"bench-{b_version}.patch"
        report["tufup_patch_bytes"] = patch.stat().st_size
        report["tufup_publish_b"] = {"seconds": round(tufup_publish.seconds, 1),
                                     "peak_rss_mb": round(tufup_publish.maxrss_mb, 1)}
        pristine = work / "tufup-client"
        (pristine / "metadata").mkdir(parents=True)
        (pristine / "targets").mkdir()
        shutil.copy(repo / "metadata" / "root.json", pristine / "metadata" / "root.json")
        shutil.copy(repo / "targets" / f"bench-{a_version}.tar.gz", pristine / "targets")

        ours_s: list[float] = []
        ours_work_s: list[float] = []
        full_work_s: list[float] = []
        ours_rss: list[float] = []
        tufup_s: list[float] = []
        tufup_wall: list[float] = []
        tufup_rss: list[float] = []
        tufup_phases: list[dict[str, float]] = []
        full_s: list[float] = []
        full_rss: list[float] = []
        identical: bool | None = None
        delta_sha = sha256_of(delta)
        with LoopbackServer() as server:
            server.put_file("/feed/delta", delta)
            server.serve_directory("/tufup", repo)
            url = server.url

            def ours() -> None:
                nonlocal identical
                dest = work / "ours-out"
                remove_tree(dest)
                r = run_measured([PY, "-c", _OURS_APPLY, f"{url}/feed/delta", str(a_tree), str(manifests / "a.json"),
                                  b_manifest.digest, str(dest), delta_sha])
                ours_s.append(r.seconds)
                ours_work_s.append(last_json(r)["seconds"])
                ours_rss.append(r.maxrss_mb)
                if identical is None:
                    identical = same_tree(dest, b_tree)
                remove_tree(dest)

            def tufup_apply() -> None:
                client = work / "tufup-run"
                remove_tree(client)
                shutil.copytree(pristine, client)
                os.sync()
                r = run_measured([str(tufup), str(driver), "apply", str(client), f"{url}/tufup", a_version], cwd=work)
                phases = last_json(r)["phases"]
                tufup_phases.append(phases)
                tufup_s.append(phases["download"] + phases["patch"] + phases["extract"])
                tufup_wall.append(r.seconds)
                tufup_rss.append(r.maxrss_mb)
                remove_tree(client)

            def full() -> None:
                dest = work / "full-out"
                remove_tree(dest)
                r = run_measured([PY, "-c", _FULL_STAGE, str(feed / f"bench-{b_version}.tar.gz"),
                                  str(manifests / "b.json"), str(dest)])
                full_s.append(r.seconds)
                full_work_s.append(last_json(r)["seconds"])
                full_rss.append(r.maxrss_mb)
                remove_tree(dest)

            apply_contenders = [ours, tufup_apply, full]
            for i in range(rounds):
                order = apply_contenders[i % 3:] + apply_contenders[:i % 3]
                log(f"apply round {i + 1}/{rounds}: {', '.join(f.__name__ for f in order)}")
                for contender in order:
                    os.sync()
                    contender()

        plain_s: list[float] = []
        with_deltas_s: list[float] = []
        with_deltas_rss: list[float] = []

        def plain() -> None:
            out = work / "publish-plain"
            remove_tree(out)
            out.mkdir()
            plain_s.append(run_measured([PY, "-c", _PUBLISH, str(b_tree), str(out), b_version]).seconds)
            remove_tree(out)

        def with_deltas() -> None:
            out = work / "publish-deltas"
            remove_tree(out)
            out.mkdir()
            r = run_measured([PY, "-c", _PUBLISH, *([str(b_tree), str(out)] + publish_args[2:])])
            with_deltas_s.append(r.seconds)
            with_deltas_rss.append(r.maxrss_mb)
            remove_tree(out)

        for i in range(rounds):
            order = [plain, with_deltas] if i % 2 == 0 else [with_deltas, plain]
            log(f"publish round {i + 1}/{rounds}")
            for contender in order:
                os.sync()
                contender()

        log("desktop update A -> B through a feed, with and without a delta")
        report.update(measure_update(work, a_tree, b_tree, rounds))

    report["ours_apply_s"] = summary(ours_s)
    report["ours_apply_peak_rss_mb"] = round(max(ours_rss), 1)
    report["tufup_apply_s"] = summary(tufup_s)
    report["tufup_apply_wall_s"] = summary(tufup_wall)
    report["tufup_apply_phases_median_s"] = {k: round(statistics.median(p[k] for p in tufup_phases), 3)
                                             for k in tufup_phases[0]}
    report["tufup_apply_peak_rss_mb"] = round(max(tufup_rss), 1)
    report["full_stage_s"] = summary(full_s)
    # Inside the process, after imports (how a running shell would see them): raw figures only.
    report["ours_apply_work_s"] = summary(ours_work_s)
    report["full_stage_work_s"] = summary(full_work_s)
    report["delta_apply_vs_full_stage_work"] = round(statistics.median(ours_work_s) / statistics.median(full_work_s), 3)
    report["full_stage_peak_rss_mb"] = round(max(full_rss), 1)
    report["publish_plain_s"] = summary(plain_s)
    report["publish_with_3_deltas_s"] = summary(with_deltas_s)
    report["publish_with_3_deltas_peak_rss_mb"] = round(max(with_deltas_rss), 1)
    report["delta_bytes"] = delta_bytes
    report["delta_bytes_vs_tufup"] = round(delta_bytes / report["tufup_patch_bytes"], 3)
    report["delta_bytes_vs_full_archive"] = round(delta_bytes / report["full_archive_bytes"], 4)
    report["delta_apply_vs_tufup"] = round(statistics.median(ours_s) / statistics.median(tufup_s), 3)
    report["delta_apply_vs_full_stage"] = round(statistics.median(ours_s) / statistics.median(full_s), 3)
    report["delta_peak_rss_mb"] = report["ours_apply_peak_rss_mb"]
    report["delta_tree_identical"] = bool(identical)
    report["publish_with_3_deltas_vs_plain"] = round(statistics.median(with_deltas_s) / statistics.median(plain_s), 3)
    report["targets"] = {
        "delta_bytes_vs_tufup": [TARGET_BYTES, report["delta_bytes_vs_tufup"] <= TARGET_BYTES],
        "delta_apply_vs_tufup": [TARGET_APPLY_TUFUP, report["delta_apply_vs_tufup"] <= TARGET_APPLY_TUFUP],
        "delta_apply_vs_full_stage": [TARGET_APPLY_FULL, report["delta_apply_vs_full_stage"] <= TARGET_APPLY_FULL],
        "delta_peak_rss_mb": [TARGET_RSS_MB, report["delta_peak_rss_mb"] <= TARGET_RSS_MB],
        "publish_with_3_deltas_vs_plain": [TARGET_PUBLISH, report["publish_with_3_deltas_vs_plain"] <= TARGET_PUBLISH],
        "delta_tree_identical": [True, report["delta_tree_identical"]],
        "update_delta_vs_full": [TARGET_APPLY_FULL, report["update_delta_vs_full"] <= TARGET_APPLY_FULL],
        f"update_delta_vs_full_{LINK_MBIT}mbit": [TARGET_APPLY_FULL,
                                                  report[f"update_delta_vs_full_{LINK_MBIT}mbit"] <= TARGET_APPLY_FULL],
    }
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def print_summary(report: dict[str, Any]) -> None:
    print(f"{report['mode']} run on {report['filesystem']}: B = {report['b_files']} files, "
          f"{report['b_unpacked_mb']} MB unpacked, full archive {report['full_archive_bytes'] / MB:.1f} MB")
    print(f"  bytes   ours {report['delta_bytes']:,} vs tufup patch {report['tufup_patch_bytes']:,}")
    for name, s in (("ours apply", report["ours_apply_s"]), ("tufup download+patch+extract", report["tufup_apply_s"]),
                    ("full stage", report["full_stage_s"]), ("publish plain", report["publish_plain_s"]),
                    ("publish + 3 deltas", report["publish_with_3_deltas_s"]),
                    ("desktop update via delta", report["update_delta_s"]),
                    ("desktop update, full archive", report["update_full_s"]),
                    (f"update via delta, {LINK_MBIT} Mbit/s", report[f"update_delta_{LINK_MBIT}mbit_s"]),
                    (f"update, full archive, {LINK_MBIT} Mbit/s", report[f"update_full_{LINK_MBIT}mbit_s"])):
        print(f"  {name:30s} min {s['min']:.2f} s  median {s['median']:.2f} s")
    print(f"  peak RSS: ours {report['delta_peak_rss_mb']} MB, tufup {report['tufup_apply_peak_rss_mb']} MB, "
          f"full stage {report['full_stage_peak_rss_mb']} MB; tufup publish of B {report['tufup_publish_b']}")
    for key, (target, ok) in report["targets"].items():
        print(f"  {key:32s} {report[key]!s:>8}  target {target!s:>5}  {'ok' if ok else 'MISSED'}")
    print(f"  elapsed {report['elapsed_s']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one fifth of the size (1-2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--workdir", metavar="DIR", help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    report = run(args.quick, rounds=args.rounds, work_parent=args.workdir, keep=args.keep)
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
