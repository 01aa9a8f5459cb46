"""The measurement behind the choice of extraction engine: the byte path alone, without checks.

    .venv/bin/python bench/engines.py ARCHIVE.tgz DIR [--rounds 5] [--only a,b]

Each candidate unpacks ARCHIVE.tgz into DIR/out (DIR on the file system to measure; the tree
is deleted and the file system synced before every run), interleaved with the order rotated;
wall and CPU time (user + system) per candidate, medians. The member checks are the same
whichever engine feeds them, so they are left out here; `bench/run.py` measures the shipped
safe_extract. Candidates:

  tarfile_gzip   the previous engine: tarfile streaming mode over gzip.GzipFile (zlib)
  tarfile_isal   the same over ISA-L's igzip
  own_zlib       tar framing read here, headers parsed by tarfile.TarInfo.fromtarfile, zlib
  own_isal       the same over ISA-L (the chosen engine)
  libarchive     libarchive-c (libarchive's own gzip), data blocks written from its buffer
  libarchive_isal  libarchive's tar reader fed by ISA-L through a read callback
  tar            GNU tar xzf (for scale)

libarchive-c is not a dependency of the project: `pip install libarchive-c==5.3` (and Debian's
libarchive13) to include it.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from desktop.core.tree import remove_tree  # noqa: E402

MB = 1024 * 1024


def _makedirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _create(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        _makedirs(os.path.dirname(path))
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _tarfile(archive: str, dest: str, opener: Callable[..., Any]) -> None:
    with opener(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tf:
        for m in tf:
            tf.members.clear()  # type: ignore[attr-defined]
            path = os.path.join(dest, m.name)
            if m.isdir():
                _makedirs(path)
            elif m.issym():
                _makedirs(os.path.dirname(path))
                os.symlink(m.linkname, path)
            elif m.isreg():
                fd = _create(path)
                src = tf.extractfile(m)
                assert src is not None
                while chunk := src.read(MB):
                    _write_all(fd, memoryview(chunk))
                os.fchmod(fd, 0o644)
                os.close(fd)


class _Headers:
    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, fileobj: Any) -> None:
        self.fileobj = fileobj
        self.offset = 0
        self.pax_headers: dict[str, str] = {}


class _Counted:
    def __init__(self, src: Any) -> None:
        self.src = src
        self.pos = 0

    def read(self, n: int) -> bytes:
        data: bytes = self.src.read(n)
        self.pos += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        n: int = self.src.readinto(view)
        self.pos += n
        return n

    def tell(self) -> int:
        return self.pos


def _own(archive: str, dest: str, opener: Callable[..., Any]) -> None:
    buf = memoryview(bytearray(MB))
    with opener(archive, "rb") as gz:
        stream = _Counted(gz)
        headers = _Headers(stream)
        while True:
            try:
                m = tarfile.TarInfo.fromtarfile(headers)  # type: ignore[arg-type]
            except tarfile.EOFHeaderError:  # type: ignore[attr-defined]
                break
            path = os.path.join(dest, m.name)
            if m.isdir():
                _makedirs(path)
            elif m.issym():
                _makedirs(os.path.dirname(path))
                os.symlink(m.linkname, path)
            elif m.isreg():
                fd = _create(path)
                left = m.size
                while left:
                    n = stream.readinto(buf[: min(left, len(buf))])
                    _write_all(fd, buf[:n])
                    left -= n
                os.fchmod(fd, 0o644)
                os.close(fd)
            stream.read(headers.offset - stream.tell())


def _libarchive(archive: str, dest: str, isal: bool) -> None:
    import libarchive
    import libarchive.ffi as ffi

    read_block = ffi.read_data_block
    block = ctypes.c_void_p()
    size = ctypes.c_size_t()
    offset = ctypes.c_longlong()

    def entries(reader: Any) -> None:
        for e in reader:
            path = os.path.join(dest, e.pathname)
            kind = e.filetype & 0o170000
            if kind == 0o040000:
                _makedirs(path)
            elif kind == 0o120000:
                _makedirs(os.path.dirname(path))
                os.symlink(e.linkpath, path)
            else:
                fd = _create(path)
                while read_block(reader._pointer, ctypes.byref(block), ctypes.byref(size), ctypes.byref(offset)) != 1:
                    view = memoryview((ctypes.c_char * size.value).from_address(block.value or 0)).cast("B")
                    _write_all(fd, view)
                os.fchmod(fd, 0o644)
                os.close(fd)

    if not isal:
        with libarchive.file_reader(archive) as reader:
            entries(reader)
        return
    from isal import igzip

    with igzip.open(archive, "rb") as gz, \
            libarchive.stream_reader(gz, format_name="tar", filter_name="none", block_size=MB) as reader:
        entries(reader)


def _tar(archive: str, dest: str) -> None:
    subprocess.run(["tar", "xzf", archive, "-C", dest], check=True)


def candidates() -> dict[str, Callable[[str, str], None]]:
    from isal import igzip

    found: dict[str, Callable[[str, str], None]] = {
        "tarfile_gzip": lambda a, d: _tarfile(a, d, gzip.open),
        "tarfile_isal": lambda a, d: _tarfile(a, d, igzip.open),
        "own_zlib": lambda a, d: _own(a, d, gzip.open),
        "own_isal": lambda a, d: _own(a, d, igzip.open),
    }
    try:
        import libarchive  # noqa: F401
    except (ImportError, OSError, AttributeError):
        print("engines: libarchive-c (or libarchive13) not installed: skipping libarchive", file=sys.stderr)
    else:
        found["libarchive"] = lambda a, d: _libarchive(a, d, isal=False)
        found["libarchive_isal"] = lambda a, d: _libarchive(a, d, isal=True)
    if shutil.which("tar"):
        found["tar"] = _tar
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive")
    parser.add_argument("dir")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated candidates")
    args = parser.parse_args()
    every = candidates()
    names = [n for n in every if not args.only or n in args.only.split(",")]
    out = os.path.join(args.dir, "out")
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            remove_tree(out)
            os.sync()
            os.mkdir(out)
            before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            start = time.perf_counter()
            every[name](args.archive, out)
            wall[name].append(time.perf_counter() - start)
            after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            cpu[name].append(sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
                                 for a, b in zip(after, before, strict=True)))
    remove_tree(out)
    for name in names:
        print(f"{name:16} wall {statistics.median(wall[name]):.2f} s (min {min(wall[name]):.2f})   "
              f"cpu {statistics.median(cpu[name]):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
