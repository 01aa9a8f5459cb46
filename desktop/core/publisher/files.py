"""The feed directory on disk: its layout, world-readable writes, the lock and the staged switch.

A new state is written into a staging directory inside the feed (same filesystem, so each
file goes live with one `rename`), verified there, then moved into place in an order that
never shows a client a half-published feed:

1. targets (hash-prefixed archives and indexes: new names, nothing refers to them yet);
2. versioned metadata (`N.targets.json`, `N.snapshot.json`: new names as well);
3. the unversioned copies (`targets.json`, `snapshot.json`), which clients of a
   consistent-snapshot feed never read;
4. `timestamp.json`: the one file whose replacement makes the new state visible;
5. a new `N.root.json` (and `root.json`) last. During a rotation the new timestamp,
   snapshot and targets also carry the old keys' signatures when they were given, so a
   client still on root N-1 accepts them until root N appears.

The feed is served by a web server that usually runs as another user: every file the
publisher writes is 0644 and every directory 0755, whatever the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock

from desktop.core.publisher.errors import FeedBusyError, FeedStateError
from desktop.core.state import fsync_dir
from desktop.core.tree import remove_tree

FILE_MODE = 0o644
DIR_MODE = 0o755
LOCK_NAME = ".publish.lock"
STAGING_PREFIX = ".staging-"
_CHUNK = 1 << 20
_VERSIONED = re.compile(r"^([1-9][0-9]{0,9})\.(root|targets|snapshot)\.json$")

Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    return None


@dataclass(frozen=True)
class FeedLayout:
    """Where things live in a feed directory."""

    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def targets(self) -> Path:
        return self.root / "targets"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    def versions(self, role: str) -> list[int]:
        """Every N for which `metadata/N.<role>.json` exists, ascending."""
        found: list[int] = []
        try:
            names = os.listdir(self.metadata)
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise FeedStateError(f"cannot list {self.metadata}: {exc.strerror or exc}") from None
        for name in names:
            match = _VERSIONED.match(name)
            if match and match.group(2) == role:
                found.append(int(match.group(1)))
        return sorted(found)


def make_public_dir(path: Path) -> None:
    """Create `path` (and missing parents inside it) readable and searchable by everyone."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a new file, 0644 whatever the umask, and make it durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> tuple[str, int]:
    """The hex sha256 and length of a file, streamed."""
    digest = hashlib.sha256()
    length = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


@contextlib.contextmanager
def feed_lock(layout: FeedLayout, timeout: float) -> Iterator[None]:
    """Hold the feed's publisher lock; `FeedBusyError` if another publisher keeps it past `timeout`.

    The lock is an flock on `.publish.lock`: the kernel drops it when its holder dies, even
    by kill -9, so a crashed publisher never wedges the feed.
    """
    lock = filelock.FileLock(layout.lock_file, timeout=max(0.0, timeout), mode=FILE_MODE, thread_local=False,
                             is_singleton=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        waited = f" after waiting {timeout:g}s" if timeout > 0 else ""
        raise FeedBusyError(f"another publisher is working on {layout.root} (it holds {layout.lock_file}){waited}; "
                            "try again when it has finished") from None
    try:
        with contextlib.suppress(OSError):
            os.chmod(layout.lock_file, FILE_MODE)
        yield
    finally:
        lock.release()


def remove_stale_staging(layout: FeedLayout) -> None:
    """Delete staging directories left by a publisher that died (call with the lock held)."""
    try:
        with os.scandir(layout.root) as it:
            entries = list(it)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)


def widen_modes(layout: FeedLayout) -> None:
    """Make an existing feed servable by another user: dirs 0755, files 0644 (links left alone).

    Feeds written by earlier versions of the publisher have 0600 metadata.
    """
    for directory in (layout.root, layout.metadata, layout.targets):
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(directory, DIR_MODE)
        if directory == layout.root:
            continue
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                entry_st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(entry_st.st_mode) and stat.S_IMODE(entry_st.st_mode) != FILE_MODE:
                    os.chmod(entry.path, FILE_MODE)


def commit_rank(rel: str) -> tuple[int, int, str]:
    """Sort key putting staged files in the order they may safely go live (see the module doc)."""
    folder, _, name = rel.partition("/")
    if folder == "targets":
        return (0, 0, name)
    match = _VERSIONED.match(name)
    if match and match.group(2) == "root":
        return (4, int(match.group(1)), name)
    if name == "root.json":
        return (5, 0, name)
    if match:
        return (1, int(match.group(1)), name)
    if name == "timestamp.json":
        return (3, 0, name)
    return (2, 0, name)


class Staging:
    """A directory inside the feed holding the next state until it is verified and switched in."""

    def __init__(self, layout: FeedLayout) -> None:
        self.layout = layout
        self.dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=layout.root))
        self.metadata = self.dir / "metadata"
        self.targets = self.dir / "targets"
        self.metadata.mkdir()
        self.targets.mkdir()
        self.work = self.dir / "work"
        self.work.mkdir()

    def add_metadata(self, name: str, data: bytes) -> Path:
        path = self.metadata / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        write_public_file(path, data)
        return path

    def add_target_bytes(self, name: str, data: bytes) -> Path:
        path = self.targets / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        write_public_file(path, data)
        return path

    def add_target_file(self, source: Path, name: str) -> Path:
        """Move a file written (and synced, as the packer does) under `self.work` into the staged targets."""
        path = self.targets / name
        os.chmod(source, FILE_MODE)
        os.replace(source, path)
        return path

    def staged(self) -> list[str]:
        """Relative paths (`metadata/...`, `targets/...`) of everything staged, in commit order."""
        rels = [f"metadata/{name}" for name in os.listdir(self.metadata)]
        rels += [f"targets/{name}" for name in os.listdir(self.targets)]
        return sorted(rels, key=commit_rank)

    def commit(self, checkpoint: Checkpoint = _no_checkpoint) -> list[str]:
        """Move every staged file into the live feed, in commit order, each with one rename."""
        make_public_dir(self.layout.metadata)
        make_public_dir(self.layout.targets)
        order = self.staged()
        live_dirs: set[Path] = set()
        previous_rank = -1
        for rel in order:
            rank = commit_rank(rel)[0]
            if rank != previous_rank:
                # Everything of the previous group must be durable before the next group can
                # refer to it after a power cut.
                for directory in live_dirs:
                    fsync_dir(directory)
                live_dirs.clear()
                previous_rank = rank
            checkpoint(f"replace {rel}")
            source = self.dir / rel
            target = self.layout.root / rel
            if rel.startswith("targets/") and target.exists():
                # Same name means same sha256: the live copy already holds these bytes.
                source.unlink()
                continue
            os.replace(source, target)
            live_dirs.add(target.parent)
        for directory in live_dirs:
            fsync_dir(directory)
        widen_modes(self.layout)
        return order

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            remove_tree(self.dir)


def replace_public_file(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, 0644 (a file to ship or serve)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        write_public_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
