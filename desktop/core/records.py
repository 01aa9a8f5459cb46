"""What a staged version holds, recorded at staging time: every file's size and sha256.

The record lives outside the runtime's own files (records/<v>.json) and is written, durable,
before the version directory is renamed into place. Launch and "already staged" check a
version against it: every recorded file's size (cheap: one lstat each) plus the full hash of
the entry point and the native dependencies. A version that no longer matches its record was
damaged on disk: it is re-staged, and a start failure of it is not blamed on the release.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from desktop.core.state import Fields, atomic_write_json, read_state
from desktop.core.tree import walk
from desktop.core.versions import parse_version

if TYPE_CHECKING:
    from desktop.core.archive import Written
    from desktop.core.delta import FileManifest

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 128 * 1024 * 1024
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def file_sha256(path: Path | str) -> str:
    """sha256 of a regular file, streamed, never through a symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class VersionRecord:
    """Files and links of one staged version, and which of them must be hashed at launch.

    Stored as parallel arrays (paths, sizes, sha256s): a 10k-file record parses in a few ms.
    """

    version: Version
    entry: str
    native: tuple[str, ...]
    paths: tuple[str, ...]
    sizes: tuple[int, ...]
    digests: tuple[str, ...]
    links: dict[str, str]

    @property
    def files(self) -> dict[str, tuple[int, str]]:
        return {p: (s, d) for p, s, d in zip(self.paths, self.sizes, self.digests, strict=True)}

    def to_json(self) -> dict[str, Any]:
        order = sorted(range(len(self.paths)), key=self.paths.__getitem__)
        return {
            "version": str(self.version),
            "entry": self.entry,
            "native": list(self.native),
            "paths": [self.paths[i] for i in order],
            "sizes": [self.sizes[i] for i in order],
            "sha256": [self.digests[i] for i in order],
            "links": [[rel, target] for rel, target in sorted(self.links.items())],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str) -> VersionRecord | None:
        fields = Fields(obj, source)
        version = parse_version(fields.text("version"))
        entry = fields.text("entry")
        paths, sizes, digests = fields.sequence("paths"), fields.sequence("sizes"), fields.sequence("sha256")
        if version is None or not entry or not len(paths) == len(sizes) == len(digests):
            return None
        if not (all(type(p) is str for p in paths) and all(type(n) is int for n in sizes)
                and all(type(d) is str for d in digests)):
            log.warning("%s: malformed file entries; ignoring the record", source)
            return None
        links: dict[str, str] = {}
        for item in fields.sequence("links"):
            if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                links[item[0]] = item[1]
            else:
                return None
        native = tuple(n for n in fields.sequence("native") if isinstance(n, str))
        return cls(version, entry, native, tuple(paths), tuple(sizes), tuple(digests), links)

    def must_hash(self, rel: str) -> bool:
        """The entry point and everything under a native dependency are hashed at every launch."""
        return rel == self.entry or any(rel == n or rel.startswith(n + "/") for n in self.native)


def build_record(version: Version, directory: Path, entry: str, native: tuple[str, ...], *,
                 known: Mapping[str, Written] | None = None) -> VersionRecord:
    """Hash every file of a (complete) version directory (a file in `known`, as an extraction just
    wrote it, is not read again while it is unchanged)."""
    paths: list[str] = []
    sizes: list[int] = []
    digests: list[str] = []
    links: dict[str, str] = {}
    for item in walk(directory):
        if item.is_file:
            paths.append(item.rel)
            sizes.append(item.st.st_size)
            written = known.get(item.rel) if known is not None else None
            digest = written.digest_if_unchanged(item.st) if written is not None else None
            digests.append(digest or file_sha256(item.path))
        elif item.is_link:
            links[item.rel] = os.readlink(item.path)
    return VersionRecord(version, entry, native, tuple(paths), tuple(sizes), tuple(digests), links)


def write_record(path: Path, record: VersionRecord) -> None:
    atomic_write_json(path, record.to_json(), compact=True)


def read_record(path: Path) -> VersionRecord | None:
    read = read_state(path, max_bytes=MAX_RECORD_BYTES)
    if read.obj is None:
        return None
    return VersionRecord.from_json(read.obj, str(path))


def check_against(directory: Path, record: VersionRecord, *, full: bool = False) -> str | None:
    """Why `directory` no longer matches `record`, or None when it does.

    Sizes of every recorded file (and link targets) always; hashes of the entry and native
    dependencies, or of everything with `full`. Files the runtime added itself are ignored.
    """
    mismatch = first_mismatch(directory, record, full=full)
    return mismatch[1] if mismatch else None


def first_mismatch(directory: Path, record: VersionRecord, *, full: bool = False) -> tuple[str, str] | None:
    """(relative path, why) of the first recorded entry that no longer matches, or None."""
    try:
        top = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        return ".", f"{directory} cannot be opened: {exc.strerror or exc}"
    try:
        hashed = tuple(n + "/" for n in record.native)
        for rel, size, digest in zip(record.paths, record.sizes, record.digests, strict=True):
            try:
                st = os.stat(rel, dir_fd=top, follow_symlinks=False)
            except OSError:
                return rel, f"{rel} is missing"
            if st.st_size != size or not stat.S_ISREG(st.st_mode):
                return rel, (f"{rel} is {st.st_size} bytes, recorded {size}" if stat.S_ISREG(st.st_mode)
                             else f"{rel} is not a regular file")
            if full or rel == record.entry or rel.startswith(hashed) or rel in record.native:
                try:
                    if file_sha256(os.path.join(directory, rel)) != digest:
                        return rel, f"{rel} does not match its recorded sha256"
                except OSError as exc:
                    return rel, f"{rel} cannot be read: {exc.strerror or exc}"
        for rel, target in record.links.items():
            try:
                if os.readlink(rel, dir_fd=top) != target:
                    return rel, f"link {rel} changed"
            except OSError:
                return rel, f"link {rel} is missing"
    finally:
        os.close(top)
    return None


def changed_by_runtime(directory: Path, record: VersionRecord, since: float) -> str | None:
    """The recorded file that no longer matches and was written at or after `since` (wall clock), if
    any: what a runtime that writes into its own version directory leaves behind."""
    mismatch = first_mismatch(directory, record, full=True)
    if mismatch is None:
        return None
    try:
        st = os.lstat(os.path.join(os.fspath(directory), mismatch[0]))
    except OSError:
        return None
    return mismatch[0] if st.st_mtime >= since else None


def read_files_manifest(path: Path) -> FileManifest | None:
    """A version's recorded file manifest (as published), or None when missing or unusable."""
    from desktop.core.delta import parse_manifest
    from desktop.core.delta.errors import FileManifestError

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    try:
        return parse_manifest(data)
    except FileManifestError as exc:
        log.warning("%s is unusable: %s", path, exc)
        return None
