"""Where the benchmark writes trees: a loop-mounted, journaled ext4 image when it runs as root.

File creation costs differ several-fold between file systems (ext4 without a journal
creates a file for 0.3-0.5 ms of wall time and hides every tool's CPU cost), so the
benchmark measures on the kind of file system users have and says which one it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Filesystem:
    path: Path
    description: str
    fstype: str
    journaled: bool | None
    loop_image: bool


def _fstype(path: Path) -> str:
    try:
        done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _journaled(device_or_image: str) -> bool | None:
    try:
        done = subprocess.run(["dumpe2fs", "-h", device_or_image], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        if line.startswith("Filesystem features:"):
            return "has_journal" in line.split()
    return None


def _source(path: Path) -> str:
    try:
        done = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "--target", str(path)], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _can_loop_mount() -> bool:
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("mkfs.ext4", "mount", "umount"))


def _unmount(mount: Path) -> None:
    for attempt in range(10):
        done = subprocess.run(["umount", str(mount)], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0:
            return
        time.sleep(0.2 * (attempt + 1))
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60, check=False)


@contextlib.contextmanager
def measurement_fs(work: Path, size_gb: float) -> Iterator[Filesystem]:
    """A directory to measure in: a fresh journaled ext4 image when root, else `work` as it is.

    The image is unmounted (and its loop device released) on the way out, also on failure.
    """
    host = _fstype(work)
    if not _can_loop_mount():
        source = _source(work)
        journaled = _journaled(source) if host.startswith("ext") and source.startswith("/dev/") else None
        yield Filesystem(work, f"{host} (the work directory's own file system; not root, no loop image)", host,
                         journaled, False)
        return
    image = work / "ext4.img"
    mount = work / "fs"
    mount.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(int(size_gb * 1024**3))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "has_journal", str(image)], check=True, timeout=120,
                   capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, timeout=60, capture_output=True)
    try:
        journaled = _journaled(str(image))
        yield Filesystem(mount, f"ext4, journaled (data=ordered), loop-mounted {size_gb:g} GB image on {host}",
                         "ext4", journaled, True)
    finally:
        _unmount(mount)
        image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mount.rmdir()
