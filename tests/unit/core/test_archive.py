"""safe_extract: malicious, corrupt and oversized archives are refused and leave nothing behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import py7zr
import pytest
from backports import zstd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from desktop.core.archive import ExtractLimits, detect_format, safe_extract
from desktop.core.errors import CancelledError, DiskSpaceError, InvalidReleaseError, UnsafeArchiveError

FORMATS = ["tar.gz", "tar.zst", "zip", "7z"]
MiB = 1024 * 1024


# --------------------------------------------------------------------------- archive builders


@dataclass
class M:
    """One member of a test archive."""

    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | chr | blk | fifo | sock
    data: bytes = b""
    target: str = ""
    mode: int | None = None
    size: int | None = None  # for zero-filled members built without holding them in memory
    extra: dict[str, str] = field(default_factory=dict)


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _default_mode(m: M) -> int:
    if m.mode is not None:
        return m.mode
    return {"dir": 0o700, "symlink": 0o777}.get(m.kind, 0o600)


def make_tar(path: Path, members: list[M]) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as tf:
        _fill_tar(tf, members)
    return path


def make_tar_zst(path: Path, members: list[M]) -> Path:
    options = {zstd.CompressionParameter.compression_level: 1, zstd.CompressionParameter.checksum_flag: 1}
    with zstd.ZstdFile(path, "w", options=options) as zf, \
            tarfile.open(fileobj=zf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _fill_tar(tf, members)
    return path


def _fill_tar(tf: tarfile.TarFile, members: list[M]) -> None:
    types = {
        "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    for m in members:
        info = tarfile.TarInfo(m.name)
        info.type = types[m.kind]
        info.mode = _default_mode(m)
        info.linkname = m.target
        info.pax_headers = dict(m.extra)
        if m.kind == "file":
            if m.size is not None:
                info.size = m.size
                tf.addfile(info, io.BufferedReader(_Zeros(m.size)))
            else:
                info.size = len(m.data)
                tf.addfile(info, io.BytesIO(m.data))
        else:
            tf.addfile(info)


def make_zip(path: Path, members: list[M]) -> Path:
    fmt = {
        "file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "chr": stat.S_IFCHR,
        "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicated names are the point of some tests
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for m in members:
                name = m.name + "/" if m.kind == "dir" and not m.name.endswith("/") else m.name
                info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
                info.create_system = 3
                info.external_attr = (fmt[m.kind] | _default_mode(m)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                if m.kind == "symlink":
                    zf.writestr(info, m.target.encode())
                elif m.size is not None:
                    with zf.open(info, "w") as w:
                        for _ in range(m.size // MiB):
                            w.write(bytes(MiB))
                        w.write(bytes(m.size % MiB))
                else:
                    zf.writestr(info, m.data)
    return path


def make_7z(path: Path, members: list[M]) -> Path:
    """Write a 7z with raw names and attributes (py7zr's private _writestr skips its name checks)."""
    fmt = {
        "file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "chr": stat.S_IFCHR,
        "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK,
    }
    with tempfile.TemporaryDirectory() as empty:
        sz = py7zr.SevenZipFile(path, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}])
        try:
            for m in members:
                if m.kind == "dir":
                    sz.write(empty, m.name)
                    win = 0x10
                elif m.kind == "symlink":
                    sz._writestr(m.target.encode(), m.name)
                    win = 0x20 | 0x400
                else:
                    data = bytes(m.size) if m.size is not None else m.data
                    sz._writestr(data, m.name)
                    win = 0x20
                info = sz.header.files_info.files[-1]
                info["filename"] = m.name
                info["attributes"] = win | 0x8000 | ((fmt[m.kind] | _default_mode(m)) << 16)
        finally:
            sz.close()
    return path


BUILDERS: dict[str, Callable[[Path, list[M]], Path]] = {
    "tar.gz": make_tar, "tar.zst": make_tar_zst, "zip": make_zip, "7z": make_7z,
}


def build(fmt: str, tmp_path: Path, members: list[M]) -> Path:
    return BUILDERS[fmt](tmp_path / f"in.{fmt}", members)


# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> set[str]:
    """Every path under root (symlinks not followed)."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def tree(root: Path) -> dict[str, object]:
    """A comparable picture of an extracted tree: type, mode, content or link target."""
    out: dict[str, object] = {}
    for rel in sorted(snapshot(root)):
        p = root / rel
        st_ = os.lstat(p)
        if stat.S_ISLNK(st_.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st_.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(st_.st_mode), p.read_bytes())
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Where dest lives: tmp_path/w/x/dest, so that '../' and '../../' land inside tmp_path."""
    d = tmp_path / "w" / "x"
    d.mkdir(parents=True)
    return d


def assert_refused(
    archive: Path,
    work: Path,
    exc_type: type[BaseException] = UnsafeArchiveError,
    match: str | None = None,
    limits: ExtractLimits | None = None,
    **kwargs: object,
) -> BaseException:
    """safe_extract must raise exc_type and leave the file system exactly as it was."""
    root = work.parent.parent
    before = snapshot(root)
    dest = work / "dest"
    with pytest.raises(exc_type, match=match) as info:
        if limits is None:
            safe_extract(archive, dest, **kwargs)  # type: ignore[arg-type]
        else:
            safe_extract(archive, dest, limits, **kwargs)  # type: ignore[arg-type]
    assert not os.path.lexists(dest)
    assert snapshot(root) == before, "something was created or left behind"
    assert "\n" not in str(info.value)
    return info.value


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("fmt", FORMATS)
def test_extracts_tree_with_internal_symlink(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [
        M("runtime.json", data=b"{}"),
        M("bin", "dir"),
        M("bin/run", data=b"#!/bin/sh\n", mode=0o700),
        M("lib/data.txt", data=b"hello"),  # parent created implicitly
        M("bin/data", "symlink", target="../lib/data.txt"),
        M("libdir", "symlink", target="lib"),
    ])
    dest = work / "dest"
    safe_extract(archive, dest)
    assert tree(dest) == {
        "bin": ("dir", 0o700),
        "bin/data": ("link", "../lib/data.txt"),
        "bin/run": ("file", 0o700, b"#!/bin/sh\n"),
        "lib": ("dir", 0o700),
        "lib/data.txt": ("file", 0o600, b"hello"),
        "libdir": ("link", "lib"),
        "runtime.json": ("file", 0o600, b"{}"),
    }
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert (dest / "bin" / "data").read_bytes() == b"hello"
    assert snapshot(work) == {"dest", *(f"dest/{p}" for p in snapshot(dest))}  # no temp dir left


@pytest.mark.parametrize("fmt", FORMATS)
def test_strips_single_wrapping_directory(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [
        M("package", "dir"),
        M("package/runtime.json", data=b"{}"),
        M("package/app/main.py", data=b"print()"),
        M("package/link", "symlink", target="app/main.py"),
    ])
    dest = work / "dest"
    safe_extract(archive, dest)
    assert snapshot(dest) == {"runtime.json", "app", "app/main.py", "link"}
    assert (dest / "link").read_bytes() == b"print()"
    assert snapshot(work) == {"dest", *(f"dest/{p}" for p in snapshot(dest))}


@pytest.mark.parametrize("fmt", FORMATS)
def test_strips_any_single_directory_name(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("node-v20/bin/node", data=b"x", mode=0o755)])
    safe_extract(archive, work / "dest")
    assert snapshot(work / "dest") == {"bin", "bin/node"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_does_not_strip_when_root_has_several_entries(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("package/a", data=b"a"), M("other", data=b"b")])
    safe_extract(archive, work / "dest")
    assert snapshot(work / "dest") == {"package", "package/a", "other"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_does_not_strip_single_file_or_symlink(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("runtime.json", data=b"{}")])
    safe_extract(archive, work / "dest")
    assert snapshot(work / "dest") == {"runtime.json"}
    archive2 = BUILDERS[fmt](tmp_path / "two", [M("self", "symlink", target=".")])
    safe_extract(archive2, work / "dest2")
    assert os.path.islink(work / "dest2" / "self")


def test_tar_dot_slash_names_and_root_entry(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [
        M(".", "dir"), M("./runtime.json", data=b"{}"), M("./a//b/./c", data=b"c"),
    ])
    safe_extract(archive, work / "dest")
    assert snapshot(work / "dest") == {"runtime.json", "a", "a/b", "a/b/c"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_permissions_are_normalized(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [
        M("d", "dir", mode=0o700), M("d/x", data=b"x", mode=0o100), M("d/r", data=b"r", mode=0o600),
        M("d/w", data=b"w", mode=0o666), M("d/locked", "dir", mode=0o000), M("d/locked/f", data=b"f"),
        M("other", data=b""),
    ])
    dest = work / "dest"
    safe_extract(archive, dest)
    modes = {rel: stat.S_IMODE(os.lstat(dest / rel).st_mode) for rel in snapshot(dest)}
    assert modes == {"d": 0o700, "d/x": 0o700, "d/r": 0o600, "d/w": 0o600, "d/locked": 0o700,
                     "d/locked/f": 0o600, "other": 0o600}


def test_tar_hardlink_to_earlier_file_is_kept(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [
        M("a", data=b"payload"), M("sub/b", "hardlink", target="a"), M("c", data=b"c"),
    ])
    safe_extract(archive, work / "dest")
    assert (work / "dest" / "sub" / "b").read_bytes() == b"payload"


def test_tar_hardlink_falls_back_to_copy(tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "hardlinks not supported")

    monkeypatch.setattr("desktop.core.archive.os.link", no_link)
    archive = make_tar(tmp_path / "a.tgz", [M("a", data=b"payload", mode=0o755), M("b", "hardlink", target="a")])
    safe_extract(archive, work / "dest")
    assert (work / "dest" / "b").read_bytes() == b"payload"
    assert stat.S_IMODE(os.stat(work / "dest" / "b").st_mode) == 0o700


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_member_does_not_write_through_symlink(fmt: str, tmp_path: Path, work: Path) -> None:
    if fmt == "7z":
        archive = make_7z(tmp_path / "a.7z", [M("t", data=b"orig"), M("f", "symlink", target="t"),
                                             M("f", data=b"evil")])
        assert_refused(archive, work, match="duplicated")
        return
    archive = build(fmt, tmp_path, [M("t", data=b"orig"), M("f", "symlink", target="t"), M("f", data=b"new")])
    dest = work / "dest"
    safe_extract(archive, dest)
    assert (dest / "t").read_bytes() == b"orig"
    assert not os.path.islink(dest / "f") and (dest / "f").read_bytes() == b"new"


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_duplicate_file_replaced_by_symlink(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("t", data=b"t"), M("f", data=b"old"), M("f", "symlink", target="t")])
    safe_extract(archive, work / "dest")
    assert os.readlink(work / "dest" / "f") == "t"


@pytest.mark.parametrize("fmt", FORMATS)
def test_progress_reports_cumulative_bytes(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M(f"f{i}", size=MiB // 2 + i) for i in range(8)] + [M("x", data=b"1")])
    seen: list[int] = []
    safe_extract(archive, work / "dest", progress=seen.append)
    total = sum(MiB // 2 + i for i in range(8)) + 1
    assert seen == sorted(seen) and seen[-1] == total
    assert 2 <= len(seen) <= total // MiB + 2
    assert all(b - a >= MiB for a, b in zip(seen, seen[1:-1], strict=False))


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(make_tar(tmp_path / "x.bin", [M("a")])) == "tar.gz"
    assert detect_format(make_zip(tmp_path / "y.tar.gz", [M("a")])) == "zip"
    assert detect_format(make_7z(tmp_path / "z.zip", [M("a", data=b"a")])) == "7z"
    assert detect_format(make_tar_zst(tmp_path / "t.tgz", [M("a")])) == "tar.zst"
    empty_zip = tmp_path / "empty.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    assert detect_format(empty_zip) == "zip"
    for data in (b"", b"BZh91AY", b"ustar", b"\x00" * 600):
        p = tmp_path / "other"
        p.write_bytes(data)
        with pytest.raises(UnsafeArchiveError, match="unsupported archive format"):
            detect_format(p)


def test_unsupported_format_leaves_nothing(tmp_path: Path, work: Path) -> None:
    p = tmp_path / "x.tar.bz2"
    with tarfile.open(p, "w:bz2") as tf:
        tf.addfile(tarfile.TarInfo("a"), io.BytesIO())
    assert_refused(p, work, match="unsupported archive format")


def test_dest_must_not_exist(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [M("a", data=b"a")])
    dest = work / "dest"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        safe_extract(archive, dest)
    assert snapshot(dest) == {"keep"}


def test_empty_archives(tmp_path: Path, work: Path) -> None:
    for fmt in FORMATS:
        safe_extract(build(fmt, tmp_path, []), work / f"dest-{fmt}")
        assert snapshot(work / f"dest-{fmt}") == set()


# --------------------------------------------------------------------------- traversal and names


@pytest.mark.parametrize("fmt", FORMATS)
def test_absolute_path_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    victim = tmp_path / "abs_victim"
    archive = build(fmt, tmp_path, [M("ok", data=b"ok"), M(str(victim), data=b"evil")])
    assert_refused(archive, work, match="absolute")
    assert not victim.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["../evil", "../../evil", "a/../../evil", "a/../b", "./../evil"])
def test_dotdot_traversal_refused(fmt: str, name: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("a", "dir"), M("ok", data=b"ok"), M(name, data=b"evil")])
    assert_refused(archive, work, match=r"'\.\.'")
    assert not (work / "evil").exists() and not (tmp_path / "w" / "evil").exists()


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_backslash_names_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("..\\..\\evil", data=b"evil")])
    assert_refused(archive, work, match="backslash")


def test_windows_drive_refused(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [M("C:/Windows/evil", data=b"evil")])
    assert_refused(archive, work, match="absolute")


def test_nul_in_name_refused_zip(tmp_path: Path, work: Path) -> None:
    raw = make_zip(tmp_path / "a.zip", [M("okXevil", data=b"evil")]).read_bytes()
    (tmp_path / "nul.zip").write_bytes(raw.replace(b"okXevil", b"ok\x00evil"))
    assert_refused(tmp_path / "nul.zip", work, match="NUL")


def test_nul_in_name_refused_tar_pax(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [M("plain", data=b"x", extra={"path": "ok\x00evil"})])
    assert_refused(archive, work, match="NUL")


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_named_like_root_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("./", data=b"x")] if fmt != "zip" else [M(".", data=b"x")])
    assert_refused(archive, work, match="archive root")


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlink_absolute_target_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("l", "symlink", target=str(tmp_path)), M("l/evil", data=b"evil")])
    assert_refused(archive, work, match="absolute")
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("name", "target"), [
    ("l", ".."), ("l", "../x"), ("a/l", "../../.."), ("a/l", "../a/../../x"), ("l", "a/../../x"),
])
def test_symlink_relative_outside_refused(fmt: str, name: str, target: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("a", "dir"), M(name, "symlink", target=target), M("z", data=b"z")])
    assert_refused(archive, work, match="outside")


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlink_chain_through_parent_symlink_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    # "a/b -> .." is inside on its own; "a/b/c -> ../../x" would then point two levels above dest.
    archive = build(fmt, tmp_path, [
        M("a", "dir"), M("a/b", "symlink", target=".."), M("a/b/c", "symlink", target="../../x"),
        M("z", data=b"z"),
    ])
    assert_refused(archive, work, match="symlink")


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_through_parent_symlink_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    # "d -> sub" is a harmless internal link, but a member under it must not be written through it.
    archive = build(fmt, tmp_path, [M("sub", "dir"), M("d", "symlink", target="sub"), M("d/f", data=b"x")])
    assert_refused(archive, work, match="parent 'd' is a symlink")


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlink_resolving_outside_through_later_link_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    # "d/s -> up/.." is inside while "d/up" does not exist; "d/up -> .." then makes it dest/..
    # Only the final walk can see this one.
    archive = build(fmt, tmp_path, [
        M("d", "dir"), M("d/s", "symlink", target="up/.."), M("d/up", "symlink", target=".."),
        M("z", data=b"z"),
    ])
    assert_refused(archive, work, match="resolves outside")


@pytest.mark.parametrize("fmt", FORMATS)
def test_strip_that_would_move_a_link_outside_is_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("package/a", data=b"a"), M("package/l", "symlink", target="../package/a")])
    assert_refused(archive, work, match="outside")


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd", "missing", "a", "l", "d"])
def test_tar_bad_hardlinks_refused(target: str, tmp_path: Path, work: Path) -> None:
    (tmp_path / "w" / "outside").write_text("secret")
    members = [M("d", "dir"), M("l", "symlink", target="f"), M("f", data=b"f")]
    if target == "a":
        members.append(M("a", "hardlink", target="a"))  # link to itself
    else:
        members.append(M("h", "hardlink", target=target))
    assert_refused(make_tar(tmp_path / "a.tgz", members), work, match="hardlink")


def test_tar_hardlink_through_symlinked_parent_refused(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [
        M("real", "dir"), M("real/f", data=b"f"), M("l", "symlink", target="real"), M("h", "hardlink", target="l/f"),
    ])
    assert_refused(archive, work, match="symlink")


# --------------------------------------------------------------------------- special members and modes


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["chr", "blk", "fifo"])
def test_devices_and_fifos_refused(fmt: str, kind: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("ok", data=b"ok"), M("dev", kind)])
    assert_refused(archive, work, match="special")


@pytest.mark.parametrize("fmt", ["zip", "7z"])
def test_sockets_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    assert_refused(build(fmt, tmp_path, [M("sock", "sock")]), work, match="socket")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6644])
def test_setuid_setgid_refused(fmt: str, mode: int, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("ok", data=b"ok"), M("suid", data=b"x", mode=mode)])
    assert_refused(archive, work, match="setuid")


def test_tar_setgid_directory_refused(tmp_path: Path, work: Path) -> None:
    assert_refused(make_tar(tmp_path / "a.tgz", [M("d", "dir", mode=0o2755)]), work, match="setuid")


def test_tar_sparse_refused(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [M("s", data=b"abc", extra={
        "GNU.sparse.map": "0,3", "GNU.sparse.size": "10", "GNU.sparse.name": "s",
    })])
    assert_refused(archive, work, match="sparse")


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_type_conflicts_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    assert_refused(build(fmt, tmp_path, [M("a", data=b"a"), M("a/b", data=b"b")]), work, match="not a directory")
    assert_refused(build(fmt, tmp_path, [M("a", "dir"), M("a", data=b"a")]), work, match="replace a directory")
    assert_refused(build(fmt, tmp_path, [M("a", data=b"a"), M("a", "dir")]), work, match="replace a file")


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("fmt", FORMATS)
def test_too_many_members_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M(f"f{i}", data=b"x") for i in range(10)])
    assert_refused(archive, work, match="more than 5 members", limits=ExtractLimits(max_members=5))
    safe_extract(archive, work / "ok", ExtractLimits(max_members=10))


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_member_bomb_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("zeros", size=50 * MiB)])
    assert archive.stat().st_size < MiB
    seen: list[int] = []
    limits = ExtractLimits(max_total_bytes=10 * MiB)
    assert_refused(archive, work, match="size limit", limits=limits, progress=seen.append)
    assert max(seen, default=0) <= 10 * MiB


@pytest.mark.parametrize("fmt", FORMATS)
def test_many_member_bomb_refused_counting_written_bytes(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M(f"z{i:02}", size=MiB) for i in range(50)])
    seen: list[int] = []
    limits = ExtractLimits(max_total_bytes=10 * MiB)
    assert_refused(archive, work, match="total size limit", limits=limits, progress=seen.append)
    assert max(seen, default=0) <= 10 * MiB


def test_tar_bomb_stops_at_limit_while_writing(tmp_path: Path, work: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Declared sizes all pass; only the bytes actually written trip the limit, and no more
    # than the limit reaches the disk.
    archive = make_tar(tmp_path / "a.tgz", [M(f"z{i:02}", size=MiB) for i in range(50)])
    written = 0
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        nonlocal written
        n = real_write(fd, data)
        written += n
        return n

    monkeypatch.setattr("desktop.core.archive.os.write", counting_write)
    assert_refused(archive, work, match="total size limit", limits=ExtractLimits(max_total_bytes=10 * MiB + 5))
    monkeypatch.undo()
    assert 10 * MiB <= written <= 10 * MiB + 5


def test_tar_huge_extended_header_refused(tmp_path: Path, work: Path) -> None:
    # tarfile reads a pax header whole into memory: a huge one is refused before that.
    archive = make_tar(tmp_path / "a.tgz", [M("a", data=b"a", extra={"comment": "x" * (2 * MiB)})])
    assert_refused(archive, work, match="extended header")


def test_tar_endless_padding_is_bounded(tmp_path: Path, work: Path) -> None:
    # 30 MiB of zeros after the end-of-archive marker: read (and decompressed) only up to a cap.
    import gzip

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("empty"), io.BytesIO())
    with gzip.open(tmp_path / "a.tgz", "wb", compresslevel=1) as gz:
        gz.write(buf.getvalue())
        for _ in range(30):
            gz.write(bytes(MiB))
    limits = ExtractLimits(max_total_bytes=MiB, max_members=10)
    assert_refused(tmp_path / "a.tgz", work, match="end-of-archive|extraction limits", limits=limits)


def test_zip_central_directory_checked_before_parsing(tmp_path: Path, work: Path) -> None:
    members = [M(f"{i:04}" + "n" * 4000, data=b"") for i in range(400)]
    archive = make_zip(tmp_path / "a.zip", members)
    assert_refused(archive, work, match="central directory", limits=ExtractLimits(max_members=400))
    # The entry count is read from the end record, before zipfile builds 400 objects.
    assert_refused(archive, work, match="400 entries", limits=ExtractLimits(max_members=10, max_directories=10))


@pytest.mark.parametrize("fmt", FORMATS)
def test_member_size_limit(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M("small", data=b"x"), M("big", size=3 * MiB)])
    assert_refused(archive, work, match="per-member", limits=ExtractLimits(max_member_bytes=2 * MiB))


# --------------------------------------------------------------------------- corrupt and truncated


def _valid(fmt: str, tmp_path: Path) -> bytes:
    members = [M("package/runtime.json", data=b"{}")]
    members += [M(f"package/f{i}", data=os.urandom(20_000) + bytes(20_000)) for i in range(6)]
    return build(fmt, tmp_path, members).read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_refused(fmt: str, fraction: float, tmp_path: Path, work: Path) -> None:
    raw = _valid(fmt, tmp_path)
    p = tmp_path / "cut"
    p.write_bytes(raw[: int(len(raw) * fraction)])
    err = assert_refused(p, work)
    assert isinstance(err, InvalidReleaseError)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_corrupt_archive_refused(fmt: str, where: float, tmp_path: Path, work: Path) -> None:
    raw = bytearray(_valid(fmt, tmp_path))
    pos = int(len(raw) * where)
    for i in range(pos, min(pos + 16, len(raw))):
        raw[i] ^= 0x5A
    p = tmp_path / "bad"
    p.write_bytes(bytes(raw))
    assert_refused(p, work)


@pytest.mark.parametrize("magic", [b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"PK\x03\x04", b"PK\x05\x06",
                                   b"7z\xbc\xaf\x27\x1c"])
def test_garbage_after_magic_refused(magic: bytes, tmp_path: Path, work: Path) -> None:
    p = tmp_path / "garbage"
    p.write_bytes(magic + os.urandom(3000))
    err = assert_refused(p, work)
    assert err.__class__ is UnsafeArchiveError


def test_tar_data_after_end_marker_refused(tmp_path: Path, work: Path) -> None:
    # A tar whose second member header is garbage: tarfile would stop silently after the first.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    raw = bytearray(buf.getvalue())
    raw[1024:1024 + 100] = b"X" * 100  # second header (after a's header + one data block)
    import gzip

    p = tmp_path / "a.tgz"
    p.write_bytes(gzip.compress(bytes(raw)))
    assert_refused(p, work, match="corrupt")


# --------------------------------------------------------------------------- cancel and disk full


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("after", [0, 3])
def test_cancel(fmt: str, after: int, tmp_path: Path, work: Path) -> None:
    archive = build(fmt, tmp_path, [M(f"f{i}", size=MiB) for i in range(6)])
    calls = 0

    def cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > after

    assert_refused(archive, work, CancelledError, cancel=cancel)


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full_becomes_disk_space_error(fmt: str, tmp_path: Path, work: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    archive = build(fmt, tmp_path, [M("a", data=b"a" * 1000), M("b", data=b"b" * 1000)])
    real_write = os.write
    calls = 0

    def full(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("desktop.core.archive.os.write", full)
    assert_refused(archive, work, DiskSpaceError)


def test_callback_errors_pass_through(tmp_path: Path, work: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [M("a", data=b"a")])

    def boom() -> bool:
        raise KeyError("from the caller")

    assert_refused(archive, work, KeyError, cancel=boom)


# --------------------------------------------------------------------------- property test

# Weighted towards ordinary names so that both outcomes are common.
COMPONENTS = st.sampled_from(["a", "b", "é", "日本", "x y", "-", "a..b", "...", "a", "b", "..", ".", ""])
NAMES = st.builds(
    lambda lead, parts: lead + "/".join(parts), st.sampled_from(["", "", "", "", "./", "/", "../"]),
    st.lists(COMPONENTS, min_size=1, max_size=4),
)
MEMBERS = st.lists(
    st.builds(M, name=NAMES, kind=st.sampled_from(["file", "file", "dir", "symlink"]), data=st.just(b"data"),
              target=NAMES),
    min_size=1, max_size=5,
)


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(FORMATS), members=MEMBERS)
def test_property_inside_or_refused_without_trace(fmt: str, members: list[M]) -> None:
    with sandbox() as box:
        archive = box / "archive"
        try:
            BUILDERS[fmt](archive, members)
        except (ValueError, OSError):  # the writer itself refuses some names (e.g. py7zr)
            event(f"{fmt}: not buildable")
            return
        work = box / "o" / "i"
        work.mkdir(parents=True)
        dest = work / "dest"
        try:
            safe_extract(archive, dest)
        except UnsafeArchiveError:
            event(f"{fmt}: refused")
            assert snapshot(box) == {"archive", "o", "o/i"}
            return
        event(f"{fmt}: extracted")
        assert snapshot(box) == {"archive", "o", "o/i", "o/i/dest", *(f"o/i/dest/{p}" for p in snapshot(dest))}
        real_dest = os.path.realpath(dest)
        for rel in snapshot(dest):
            p = dest / rel
            resolved = os.path.realpath(p)
            assert resolved == real_dest or resolved.startswith(real_dest + os.sep), rel
            assert not stat.S_IMODE(os.lstat(p).st_mode) & (stat.S_ISUID | stat.S_ISGID)


# --------------------------------------------------------------------------- digests as written


@pytest.mark.parametrize("fmt", FORMATS)
def test_extraction_returns_what_it_wrote_hashed_as_written(fmt: str, tmp_path: Path) -> None:
    members = [M("package/", "dir"), M("package/a.txt", data=b"first a"), M("package/lib/", "dir"),
               M("package/lib/b.bin", data=os.urandom(3 * MiB + 7)), M("package/empty", data=b""),
               M("package/link", "symlink", target="a.txt")]
    if fmt.startswith("tar"):  # tar only: a duplicate member replaces the earlier one, a hardlink shares it
        members += [M("package/a.txt", data=b"second a, longer"), M("package/hard", "hardlink", target="package/a.txt")]
    dest = tmp_path / "out"

    written = safe_extract(build(fmt, tmp_path, members), dest, hash_files=True)

    on_disk = {p.relative_to(dest).as_posix(): p for p in dest.rglob("*") if p.is_file() and not p.is_symlink()}
    assert set(written) == set(on_disk), "every regular file, keyed without the wrapping directory"
    for rel, path in on_disk.items():
        data = path.read_bytes()
        assert (written[rel].size, written[rel].sha256) == (len(data), hashlib.sha256(data).hexdigest()), rel
        assert written[rel].digest_if_unchanged(os.lstat(path)) == written[rel].sha256
    if fmt.startswith("tar"):
        assert (dest / "a.txt").read_bytes() == b"second a, longer"


def test_a_file_changed_after_extraction_is_not_trusted(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    written = safe_extract(build("tar.gz", tmp_path, [M("a.txt", data=b"aaaa"), M("b.txt", data=b"bbbb")]), dest,
                           hash_files=True)
    (dest / "a.txt").unlink()
    (dest / "a.txt").write_bytes(b"AAAA")  # same size, another file
    with open(dest / "b.txt", "r+b") as fh:  # same inode and size, new bytes
        fh.write(b"BBBB")
    os.utime(dest / "b.txt", ns=(0, written["b.txt"].mtime_ns + 1))
    assert written["a.txt"].digest_if_unchanged(os.lstat(dest / "a.txt")) is None
    assert written["b.txt"].digest_if_unchanged(os.lstat(dest / "b.txt")) is None
    from packaging.version import Version

    from desktop.core.records import build_record

    record = build_record(Version("1.0"), dest, "a.txt", (), known=written)
    by_path = dict(zip(record.paths, record.digests, strict=True))
    assert by_path == {"a.txt": hashlib.sha256(b"AAAA").hexdigest(), "b.txt": hashlib.sha256(b"BBBB").hexdigest()}
