"""Delta encode and apply keep memory bounded on large files (peak RSS of a real subprocess)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024

# Runs one side in a fresh interpreter and prints its peak RSS (VmHWM belongs to the process's
# own address space, so nothing of the pytest process that started it is counted).
_SIDE = """
import json, sys, time
from pathlib import Path
from desktop.core.delta import apply_delta, build_delta, parse_manifest
mode, a, ma, b, mb, delta, out = sys.argv[1:8]
old = parse_manifest(Path(ma).read_bytes())
new = parse_manifest(Path(mb).read_bytes())
start = time.perf_counter()
if mode == "encode":
    stats = build_delta(a, old, b, new, delta, base_version="1", target_version="2")
    extra = {"delta_bytes": stats.delta_bytes, "pieces": stats.pieces}
else:
    with open(delta, "rb", buffering=0) as fh:
        stats = apply_delta(fh.read, a, old, new.digest, out)
    extra = {"written": stats.bytes_written}
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_mb": hwm / 1024, "seconds": time.perf_counter() - start, **extra}))
"""


def _binary(path: Path, size: int, rnd: random.Random) -> None:
    """Executable-like: incompressible runs between padding and repeated tables."""
    table = rnd.randbytes(4096)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            for part in (rnd.randbytes(rnd.randint(16, 256) * 1024), bytes(rnd.randint(1, 64) * 1024),
                         table * rnd.randint(1, 8)):
                part = part[:left]
                fh.write(part)
                left -= len(part)


def _change_regions(path: Path, rnd: random.Random, regions: int) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        for i in range(regions):
            fh.seek(size * (i + 1) // (regions + 1))
            fh.write(rnd.randbytes(rnd.randint(1, 64) * 1024))


def _side(mode: str, work: Path) -> dict[str, float]:
    args = [str(work / n) for n in ("a", "a.json", "b", "b.json", "d.delta", "out")]
    done = subprocess.run([sys.executable, "-c", _SIDE, mode, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1800, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _releases(work: Path, big: int, others: list[int], regions: int) -> None:
    from desktop.core.delta import scan_manifest

    rnd = random.Random(42)
    (work / "a" / "lib").mkdir(parents=True)
    _binary(work / "a" / "lib" / "big.so", big, rnd)
    for i, size in enumerate(others):
        _binary(work / "a" / "lib" / f"other{i}.so", size, rnd)
    (work / "a" / "runtime.json").write_text('{"name": "x", "version": "1"}')
    shutil.copytree(work / "a", work / "b")
    _change_regions(work / "b" / "lib" / "big.so", rnd, regions)
    with open(work / "b" / "lib" / "big.so", "ab") as fh:
        fh.write(rnd.randbytes(100 * 1024))
    (work / "a.json").write_bytes(scan_manifest(work / "a").to_bytes())
    (work / "b.json").write_bytes(scan_manifest(work / "b").to_bytes())


def _check_round_trip(work: Path) -> tuple[dict[str, float], dict[str, float]]:
    encoded = _side("encode", work)
    applied = _side("apply", work)
    for name in ("big.so", "other0.so"):
        assert _same_file(work / "out" / "lib" / name, work / "b" / "lib" / name)
    return encoded, applied


def _same_file(x: Path, y: Path) -> bool:
    with open(x, "rb") as fx, open(y, "rb") as fy:
        while True:
            bx, by = fx.read(MiB), fy.read(MiB)
            if bx != by:
                return False
            if not bx:
                return True


def test_64mb_file_with_changed_regions_applies_in_bounded_memory(tmp_path: Path) -> None:
    _releases(tmp_path, 64 * MiB, [8 * MiB], regions=4)
    encoded, applied = _check_round_trip(tmp_path)
    print(f"64 MB file: encode {encoded}, apply {applied}")
    assert encoded["delta_bytes"] < 2 * MiB  # the changed regions, not the file
    assert applied["peak_mb"] <= 96, applied
    assert encoded["peak_mb"] <= 400, encoded


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DESKTOP_TEST_2GB") != "1", reason="2 GB of disk and minutes: DESKTOP_TEST_2GB=1")
def test_2gb_runtime_with_a_changed_1gb_binary_stays_bounded(tmp_path: Path) -> None:
    _releases(tmp_path, 1024 * MiB, [256 * MiB] * 4, regions=6)
    encoded, applied = _check_round_trip(tmp_path)
    print(f"2 GB runtime: encode {encoded}, apply {applied}")
    assert applied["peak_mb"] <= 96, applied
    assert encoded["peak_mb"] <= 400, encoded
