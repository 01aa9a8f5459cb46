"""Would staging an npm release be faster if it reused the running version's unchanged files?

    .venv/bin/python bench/npm_reuse.py [--rounds N] [--mb SIZE] [--workdir DIR]

npm has no deltas, so the whole archive is downloaded; the only possible saving is on disk:
instead of writing a member that is unchanged since the running version, clone it (FICLONE on a
file system with reflinks) or copy it in the kernel (copy_file_range). A tar member carries no
digest, so its bytes must be decompressed and hashed anyway before it is known to be unchanged.

Scenario: a runtime like bench/run.py's (a node_modules-like mix, --mb of archive), release B
with 2 % of the files changed and 1 % added. Three contenders, each a fresh subprocess that
extracts B's tar.gz from the local disk and makes the tree durable (syncfs), interleaved with the
order rotated, >= 5 rounds, the previous tree deleted and the disk synced before each:

* safe_extract: what the stager does today (desktop/core/archive);
* tar-write: Python's tarfile stream, every member written (the same parser as the next one);
* tar-reuse: the same stream, members up to 8 MB held in memory and hashed; a member whose path,
  size and sha256 match the running version's record is cloned or copied from it instead of
  written.

Run on a journaled ext4 image and, when mkfs.xfs is present, an XFS image with reflinks (both
loop-mounted; root only). Prints min and median per contender and the ratios reuse / write.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from journaled import _unmount  # noqa: E402
from run import QUICK_MIX, generate_runtime  # noqa: E402

from desktop.core.pack import pack_directory  # noqa: E402
from desktop.core.tree import remove_tree, walk  # noqa: E402

MB = 1024 * 1024

_CONTENDER = r'''
import fcntl, hashlib, json, os, sys, tarfile, time
from pathlib import Path
from desktop.core.archive import make_durable, safe_extract
mode, archive, dest, old_root, record = sys.argv[1:6]
start = time.perf_counter()
reused = 0
if mode == "safe_extract":
    safe_extract(Path(archive), Path(dest))
else:
    known = json.loads(Path(record).read_text()) if mode == "tar-reuse" else {}
    with tarfile.open(archive, "r|gz") as tar:
        os.mkdir(dest)
        for member in tar:
            path = os.path.join(dest, member.name)
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                continue
            if member.issym():
                os.symlink(member.linkname, path)
                continue
            if not member.isfile():
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            src = tar.extractfile(member)
            old = known.get(member.name.partition("/")[2])  # npm's "package/" prefix
            if old is not None and old[0] == member.size and member.size <= 8 * 1024 * 1024:
                data = src.read()
                if hashlib.sha256(data).hexdigest() == old[1]:
                    with open(os.path.join(old_root, member.name.partition("/")[2]), "rb") as a, open(path, "wb") as b:
                        try:
                            fcntl.ioctl(b.fileno(), 0x40049409, a.fileno())  # FICLONE
                        except OSError:
                            os.copy_file_range(a.fileno(), b.fileno(), member.size)
                    reused += 1
                else:
                    with open(path, "wb") as b:
                        b.write(data)
            else:
                with open(path, "wb") as b:
                    while chunk := src.read(1024 * 1024):
                        b.write(chunk)
            os.chmod(path, member.mode & 0o755)
make_durable(Path(dest))
print(json.dumps({"seconds": time.perf_counter() - start, "reused": reused}))
'''


def log(message: str) -> None:
    print(f"npm-reuse: {message}", file=sys.stderr, flush=True)


def record_of(root: Path) -> dict[str, list[object]]:
    """What records/<v>.json holds: every regular file's size and sha256, by relative path."""
    found: dict[str, list[object]] = {}
    for entry in walk(root):
        if entry.is_file:
            data = (root / entry.rel).read_bytes()
            found[entry.rel] = [len(data), hashlib.sha256(data).hexdigest()]
    return found


def derive(a: Path, b: Path, rnd: random.Random) -> None:
    shutil.copytree(a, b, symlinks=True)
    files = sorted(p for p in b.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "runtime.json")
    for path in rnd.sample(files, max(1, len(files) // 50)):
        data = path.read_bytes()
        at = rnd.randrange(len(data) + 1)
        path.write_bytes(data[:at] + rnd.randbytes(64) + data[at:])  # a small edit somewhere
    for i in range(max(1, len(files) // 100)):
        (rnd.choice(files).parent / f"added_{i}.js").write_bytes(rnd.randbytes(rnd.randint(200, 20000)))


@contextlib.contextmanager
def image(work: Path, kind: str, size_gb: float) -> Iterator[Path]:
    img, mount = work / f"{kind}.img", work / f"mnt-{kind}"
    mount.mkdir()
    with open(img, "wb") as fh:
        fh.truncate(int(size_gb * 1024**3))
    mkfs = ["mkfs.ext4", "-q", "-F", "-O", "has_journal", str(img)] if kind == "ext4" else \
        ["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(img)]
    subprocess.run(mkfs, check=True, capture_output=True, timeout=120)
    subprocess.run(["mount", "-o", "loop", str(img), str(mount)], check=True, capture_output=True, timeout=60)
    try:
        yield mount
    finally:
        _unmount(mount)
        img.unlink(missing_ok=True)
        mount.rmdir()


def measure(fs: Path, archive: Path, a_tree: Path, record: Path, rounds: int) -> dict[str, object]:
    old = fs / "running"
    shutil.copytree(a_tree, old, symlinks=True)  # the running version lives on the same file system
    contenders = ["safe_extract", "tar-write", "tar-reuse"]
    samples: dict[str, list[float]] = {c: [] for c in contenders}
    reused = 0
    for i in range(rounds + 1):  # round 0 warms the caches and is not counted
        order = contenders[i % 3:] + contenders[:i % 3]
        for name in order:
            dest = fs / "staged"
            if dest.exists():
                remove_tree(dest)
            os.sync()
            done = subprocess.run([sys.executable, "-c", _CONTENDER, name, str(archive), str(dest), str(old),
                                   str(record)], capture_output=True, text=True, cwd=REPO, timeout=1800, check=True)
            out = json.loads(done.stdout)
            if i:
                samples[name].append(out["seconds"])
            if name == "tar-reuse":
                reused = out["reused"]
        log(f"round {i}/{rounds}: " + ", ".join(f"{n} {samples[n][-1]:.2f} s" for n in contenders if samples[n]))
    result: dict[str, object] = {n: {"min": round(min(v), 3), "median": round(statistics.median(v), 3)}
                                 for n, v in samples.items()}
    ratios = [r / w for r, w in zip(samples["tar-reuse"], samples["tar-write"], strict=True)]
    result["files_reused"] = reused
    result["reuse_vs_write"] = {"min": round(min(ratios), 3), "median": round(statistics.median(ratios), 3)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=float, default=50.0, help="archive size (default 50 MB)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    if os.geteuid() != 0:
        parser.error("needs root to loop-mount the file systems it measures on")
    work = Path(tempfile.mkdtemp(prefix="npm-reuse-", dir=args.workdir))
    report: dict[str, object] = {}
    try:
        a_tree, b_tree = work / "a", work / "b"
        generated = generate_runtime(a_tree, "1.0.0", int(args.mb * MB), 7, QUICK_MIX)
        derive(a_tree, b_tree, random.Random(8))
        archive = work / "b.tgz"
        pack_directory(b_tree, archive)
        record = work / "record.json"
        record.write_text(json.dumps(record_of(a_tree)))
        log(f"B: {generated.files} files, archive {archive.stat().st_size / MB:.1f} MB")
        kinds = ["ext4"] + (["xfs"] if shutil.which("mkfs.xfs") else [])
        for kind in kinds:
            with image(work, kind, 2.0) as fs:
                started = time.perf_counter()
                report[kind] = measure(fs, archive, a_tree, record, args.rounds)
                log(f"{kind} done in {time.perf_counter() - started:.0f} s")
    finally:
        remove_tree(work)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
