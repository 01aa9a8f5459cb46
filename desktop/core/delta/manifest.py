"""The file manifest of a release: every entry of the packed tree, with size, mode and sha256.

A manifest describes exactly what the release archive extracts to. It is computed from the entry
list the packer packs (`desktop.core.pack._scan`: ``__pycache__`` and ``*.pyc`` skipped, modes
normalized to 0o644 / 0o755, internal relative links kept as links), so a client can check a
reconstructed or a staged tree file by file against signed data.

Serialized as canonical JSON (sorted keys, no spaces, entries sorted by path, UTF-8), so the
same tree always gives the same bytes and the same digest:

    {"entries":[{"path":"app","type":"dir"},
                {"mode":420,"path":"app/main.py","sha256":"…","size":812,"type":"file"},
                {"path":"app/current","target":"main.py","type":"link"}],
     "format":"desktop-file-manifest","version":1}

Parsing is bounded (document bytes, entries, path length, total size) and strict: the bytes must
be exactly the canonical serialization of what they describe, every path relative and clean,
every entry's parent a directory entry, every link relative and inside the tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from desktop.core.delta.errors import FileManifestError
from desktop.core.errors import CancelledError
from desktop.core.tree import walk

if TYPE_CHECKING:
    from desktop.core.archive import Written

__all__ = [
    "FileManifest",
    "ManifestEntry",
    "ManifestLimits",
    "Mismatch",
    "parse_manifest",
    "scan_manifest",
    "verify_tree",
]

FORMAT: Final = "desktop-file-manifest"
FORMAT_VERSION: Final = 1
FILE: Final = "file"
LINK: Final = "link"
DIR: Final = "dir"
MODES: Final = (0o644, 0o755)
HASH_CHUNK: Final = 1024 * 1024
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ManifestLimits:
    """Bounds applied when parsing a manifest that came from the network."""

    max_document_bytes: int = 64 * 1024 * 1024
    max_entries: int = 100_000
    max_path_bytes: int = 4096
    max_total_bytes: int = 16 * 1024**3


DEFAULT_MANIFEST_LIMITS: Final = ManifestLimits()


@dataclass(frozen=True)
class ManifestEntry:
    """One entry of a release tree. `size`, `mode`, `sha256` for files; `target` for links."""

    path: str
    kind: str
    size: int = 0
    mode: int = 0o755
    sha256: str = ""
    target: str = ""

    def to_json(self) -> dict[str, object]:
        if self.kind == FILE:
            return {"path": self.path, "type": FILE, "size": self.size, "mode": self.mode, "sha256": self.sha256}
        if self.kind == LINK:
            return {"path": self.path, "type": LINK, "target": self.target}
        return {"path": self.path, "type": DIR}


@dataclass(frozen=True)
class FileManifest:
    """Every entry of a release tree, sorted by path; immutable, with a canonical serialization."""

    entries: tuple[ManifestEntry, ...]
    _by_path: dict[str, ManifestEntry] = field(default_factory=dict, init=False, repr=False, compare=False)
    _canonical: list[bytes] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_path = {e.path: e for e in self.entries}
        if len(by_path) != len(self.entries):
            raise FileManifestError("file manifest lists a path twice")
        self._by_path.update(by_path)

    def get(self, path: str) -> ManifestEntry | None:
        return self._by_path.get(path)

    @property
    def files(self) -> tuple[ManifestEntry, ...]:
        """The regular files, in manifest order (the order delta records follow)."""
        return tuple(e for e in self.entries if e.kind == FILE)

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries if e.kind == FILE)

    def to_bytes(self) -> bytes:
        """The canonical serialization: the bytes that are signed and hashed."""
        if not self._canonical:
            doc = {"format": FORMAT, "version": FORMAT_VERSION, "entries": [e.to_json() for e in self.entries]}
            self._canonical.append(
                json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return self._canonical[0]

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical serialization."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


@dataclass(frozen=True)
class Mismatch:
    """One way a tree on disk differs from its manifest."""

    path: str
    problem: str  # "missing", "unexpected", "type", "size", "mode", "sha256", "target", "unreadable"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" + (f" ({self.detail})" if self.detail else "")


# --------------------------------------------------------------------------- scanning


def scan_manifest(root: Path | str, *, cancel: Callable[[], bool] | None = None,
                  known: Mapping[str, Written] | None = None) -> FileManifest:
    """The manifest of the tree the packer would pack from `root` (every file hashed, streamed;
    a file in `known`, what an extraction just wrote, is not read again while it is unchanged).

    Raises UnsafeArchiveError for what the packer refuses (links leaving the tree, special
    files), FileManifestError for names a manifest cannot carry, CancelledError, OSError.
    """
    from desktop.core import pack  # the packer pulls in py7zr: keep it off the client's apply path

    entries: list[ManifestEntry] = []
    for item in pack._scan(Path(root)):
        if cancel is not None and cancel():
            raise CancelledError("cancelled while scanning the release tree")
        name = _checked_name(item.name)
        if item.kind == "dir":
            entries.append(ManifestEntry(name, DIR))
        elif item.kind == "symlink":
            entries.append(ManifestEntry(name, LINK, target=_checked_name(item.target, link=True)))
        else:
            written = known.get(name) if known is not None else None
            digest = written.digest_if_unchanged(item.st) if written is not None and item.st is not None else None
            size, digest = (written.size, digest) if written is not None and digest is not None \
                else hash_file(item.path, cancel)
            entries.append(ManifestEntry(name, FILE, size=size, mode=item.mode, sha256=digest))
    entries.sort(key=lambda e: e.path)
    return FileManifest(tuple(entries))


def hash_file(path: str | Path, cancel: Callable[[], bool] | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of the bytes actually read from `path`; links are not followed."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        while True:
            block = os.read(fd, HASH_CHUNK)
            if not block:
                break
            digest.update(block)
            size += len(block)
            if cancel is not None and size % (64 * HASH_CHUNK) < len(block) and cancel():
                raise CancelledError("cancelled while hashing")
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def _checked_name(name: str, *, link: bool = False) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        what = "link target" if link else "name"
        raise FileManifestError(f"{what} {name.encode('utf-8', 'surrogateescape')!r} is not UTF-8") from None
    return name


# --------------------------------------------------------------------------- parsing


def parse_manifest(data: bytes, limits: ManifestLimits = DEFAULT_MANIFEST_LIMITS) -> FileManifest:
    """Parse and check a serialized manifest; FileManifestError (one line) if anything is off."""
    if len(data) > limits.max_document_bytes:
        raise FileManifestError(f"file manifest is larger than {limits.max_document_bytes} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FileManifestError(f"file manifest is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FileManifestError("not a file manifest (format field missing or different)")
    if doc.get("version") != FORMAT_VERSION or set(doc) != {"format", "version", "entries"}:
        raise FileManifestError(f"unsupported file manifest version {doc.get('version')!r}")
    raw = doc["entries"]
    if not isinstance(raw, list):
        raise FileManifestError("file manifest: 'entries' must be a list")
    if len(raw) > limits.max_entries:
        raise FileManifestError(f"file manifest has more than {limits.max_entries} entries")
    entries = tuple(_entries(raw, limits))
    manifest = FileManifest(entries)
    if manifest.to_bytes() != data:
        raise FileManifestError("file manifest is not in canonical form")
    return manifest


def _entries(raw: list[object], limits: ManifestLimits) -> Iterator[ManifestEntry]:
    kinds: dict[str, str] = {}
    previous = ""
    total = 0
    for index, obj in enumerate(raw):
        if not isinstance(obj, dict):
            raise FileManifestError(f"file manifest entry {index} is not an object")
        path = obj.get("path")
        if not isinstance(path, str):
            raise FileManifestError(f"file manifest entry {index} has no path")
        _check_path(path, limits)
        if index and path <= previous:
            raise FileManifestError(f"file manifest entries are not sorted at {path!r}")
        previous = path
        parent = path.rpartition("/")[0]
        if parent and kinds.get(parent) != DIR:
            raise FileManifestError(f"file manifest entry {path!r}: its parent is not a directory entry")
        kind = obj.get("type")
        if kind == FILE:
            entry = _file_entry(path, obj)
            total += entry.size
            if total > limits.max_total_bytes:
                raise FileManifestError(f"file manifest describes more than {limits.max_total_bytes} bytes")
        elif kind == LINK:
            target = obj.get("target")
            if set(obj) != {"path", "type", "target"} or not isinstance(target, str):
                raise FileManifestError(f"file manifest link {path!r} is malformed")
            if (not target or target.startswith("/") or "\\" in target or "\x00" in target
                    or len(target.encode("utf-8")) > limits.max_path_bytes
                    or not _link_inside(path, target)):
                raise FileManifestError(f"file manifest link {path!r} points outside the tree: {target!r}")
            entry = ManifestEntry(path, LINK, target=target)
        elif kind == DIR:
            if set(obj) != {"path", "type"}:
                raise FileManifestError(f"file manifest directory {path!r} is malformed")
            entry = ManifestEntry(path, DIR)
        else:
            raise FileManifestError(f"file manifest entry {path!r} has unknown type {kind!r}")
        kinds[path] = entry.kind
        yield entry


def _link_inside(path: str, target: str) -> bool:
    """Lexically, whether a link at `path` to relative `target` stays inside the tree.

    Same rule as desktop.core.archive.link_stays_inside, which the packer applies; not
    imported from there because that module loads py7zr, which a client applying a delta
    does not otherwise need (0.2 s and 10 MB per start).
    """
    stack = path.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            stack.append(part)
        elif not stack:
            return False
        else:
            stack.pop()
    return True


def _file_entry(path: str, obj: dict[str, object]) -> ManifestEntry:
    size, mode, digest = obj.get("size"), obj.get("mode"), obj.get("sha256")
    if (set(obj) != {"path", "type", "size", "mode", "sha256"}
            or not isinstance(size, int) or isinstance(size, bool) or size < 0
            or mode not in MODES or isinstance(mode, bool) or not isinstance(mode, int)
            or not isinstance(digest, str) or not _HEX64.fullmatch(digest)):
        raise FileManifestError(f"file manifest file {path!r} is malformed")
    return ManifestEntry(path, FILE, size=size, mode=mode, sha256=digest)


def _check_path(path: str, limits: ManifestLimits) -> None:
    if (not path or path.startswith("/") or path.endswith("/") or "\\" in path or "\x00" in path
            or len(path.encode("utf-8")) > limits.max_path_bytes):
        raise FileManifestError(f"file manifest path {path[:200]!r} is not a clean relative path")
    for part in path.split("/"):
        if part in ("", ".", "..") or len(part.encode("utf-8")) > 255:
            raise FileManifestError(f"file manifest path {path[:200]!r} is not a clean relative path")


# --------------------------------------------------------------------------- verification


def verify_tree(
    root: Path | str,
    manifest: FileManifest,
    *,
    ignore_extra: bool = False,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Mismatch]:
    """Every way the tree at `root` differs from `manifest` (empty list: it matches).

    Walks iteratively, never follows links, hashes files streamed and only when their size
    matches. Files count as matching when their executable bit agrees with the manifest's
    mode. With `ignore_extra`, entries the manifest does not list are not reported (the
    stager copies native dependencies in; a running runtime writes ``__pycache__``).
    `progress(bytes_hashed, total_bytes)` is called after each file.
    """
    mismatches: list[Mismatch] = []
    seen: set[str] = set()
    cut: set[str] = set()  # reported subtrees: their contents are not listed again
    total = manifest.total_size
    done = 0
    for item in walk(root):
        if cancel is not None and cancel():
            raise CancelledError("cancelled while verifying the tree")
        entry = manifest.get(item.rel)
        if entry is None:
            if not ignore_extra and not _under(item.rel, cut):
                mismatches.append(Mismatch(item.rel, "unexpected"))
                cut.add(item.rel)
            continue
        seen.add(item.rel)
        problem = _compare(item.path, item.st, entry, cancel)
        if problem is not None:
            mismatches.append(problem)
            if problem.problem == "type":
                cut.add(item.rel)
        if entry.kind == FILE:
            done += entry.size
            if progress is not None:
                progress(done, total)
    for entry in manifest.entries:
        if entry.path not in seen and not _under(entry.path, cut):
            mismatches.append(Mismatch(entry.path, "missing"))
            cut.add(entry.path)
    return mismatches


def _under(path: str, cut: set[str]) -> bool:
    """Whether a parent of `path` is in `cut`."""
    while cut and "/" in path:
        path = path.rpartition("/")[0]
        if path in cut:
            return True
    return False


def _compare(path: str, st: os.stat_result, entry: ManifestEntry,
             cancel: Callable[[], bool] | None) -> Mismatch | None:
    if entry.kind == DIR:
        return None if stat.S_ISDIR(st.st_mode) else Mismatch(entry.path, "type", "expected a directory")
    if entry.kind == LINK:
        if not stat.S_ISLNK(st.st_mode):
            return Mismatch(entry.path, "type", "expected a link")
        target = os.readlink(path)
        return None if target == entry.target else Mismatch(entry.path, "target", f"{target!r} != {entry.target!r}")
    if not stat.S_ISREG(st.st_mode):
        return Mismatch(entry.path, "type", "expected a regular file")
    if st.st_size != entry.size:
        return Mismatch(entry.path, "size", f"{st.st_size} != {entry.size}")
    if (st.st_mode & 0o111 != 0) != (entry.mode == 0o755):
        return Mismatch(entry.path, "mode", f"{stat.S_IMODE(st.st_mode):o} != {entry.mode:o}")
    try:
        size, digest = hash_file(path, cancel)
    except OSError as exc:
        return Mismatch(entry.path, "unreadable", exc.strerror or type(exc).__name__)
    if size != entry.size or digest != entry.sha256:
        return Mismatch(entry.path, "sha256", "content differs")
    return None
