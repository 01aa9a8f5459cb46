"""Extraction memory does not grow with the number of members (streaming, nothing retained)."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def _many_member_tgz(path: Path, count: int) -> None:
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        payload = b"x" * 64
        for i in range(count):
            info = tarfile.TarInfo(f"package/d{i % 50}/f{i}.txt")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))


def _peak_python_mb(archive: Path, dest: Path) -> float:
    code = (
        "import sys, tracemalloc\n"
        "from pathlib import Path\n"
        "from desktop.core.archive import safe_extract\n"
        "tracemalloc.start()\n"
        "safe_extract(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "print(tracemalloc.get_traced_memory()[1] / 1048576)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(archive), str(dest)], capture_output=True, text=True,
                         check=True, timeout=300)
    return float(out.stdout.strip())


@pytest.mark.slow
def test_memory_is_flat_in_the_member_count(tmp_path: Path) -> None:
    small, large = tmp_path / "small.tgz", tmp_path / "large.tgz"
    _many_member_tgz(small, 2_000)
    _many_member_tgz(large, 40_000)
    grown = _peak_python_mb(large, tmp_path / "b") - _peak_python_mb(small, tmp_path / "a")
    # Keeping every TarInfo (tarfile's default in stream mode) costs about 20 MB here.
    assert grown < 5, f"peak Python allocations grew by {grown:.1f} MB from 2k to 40k members"
