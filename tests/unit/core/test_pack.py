"""pack_directory: reproducible archives that safe_extract gives back unchanged."""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import py7zr
import pytest

from desktop.core.archive import safe_extract
from desktop.core.errors import UnsafeArchiveError
from desktop.core.pack import DEFAULT_MTIME, pack_directory

FORMATS = ["tar.gz", "zip", "7z"]


def make_tree(root: Path, *, reverse: bool = False, exec_mode: int = 0o755, file_mode: int = 0o644) -> Path:
    """A small runtime-like tree with a relative symlink, a symlink to a directory and junk to skip."""
    dirs = ["bin", "lib/sub", "empty", "lib/__pycache__"]
    steps: list[Callable[[], object]] = [
        lambda: (root / "runtime.json").write_text('{"entry": "bin/run"}'),
        lambda: (root / "bin" / "run").write_text("#!/bin/sh\necho hi\n"),
        lambda: (root / "lib" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 300),
        lambda: (root / "lib" / "é unicode.txt").write_text("ünïcode"),
        lambda: (root / "lib" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk"),
        lambda: (root / "lib" / "stale.pyc").write_bytes(b"junk"),
        lambda: os.symlink("../lib/sub/data.bin", root / "bin" / "data"),
        lambda: os.symlink("lib/sub", root / "subdir"),
    ]
    root.mkdir(parents=True)
    for d in reversed(dirs) if reverse else dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for step in reversed(steps) if reverse else steps:
        step()
    os.chmod(root / "bin" / "run", exec_mode)
    for f in ("runtime.json", "lib/sub/data.bin", "lib/é unicode.txt"):
        os.chmod(root / f, file_mode)
    return root


def picture(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


PRIVATE = {0o755: 0o700, 0o644: 0o600}  # what extraction into the private data dir makes of a mode


def expected_picture(src: Path) -> dict[str, object]:
    pic = picture(src)
    for rel in list(pic):
        if "__pycache__" in rel.split("/") or rel.endswith(".pyc"):
            del pic[rel]
            continue
        entry = pic[rel]
        if isinstance(entry, tuple) and entry[0] in ("dir", "file"):
            pic[rel] = (entry[0], PRIVATE.get(entry[1], entry[1]), *entry[2:])
    return pic


def touch_all(root: Path, when: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (when, when), follow_symlinks=False)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrap", ["package", None])
def test_round_trip(fmt: str, wrap: str | None, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    out = tmp_path / f"out.{fmt}"
    pack_directory(src, out, fmt, wrap=wrap)
    safe_extract(out, tmp_path / "dest")
    got = picture(tmp_path / "dest")
    assert got == expected_picture(src)
    assert got["bin/data"] == ("link", "../lib/sub/data.bin")
    assert got["subdir"] == ("link", "lib/sub")
    assert got["bin/run"][:2] == ("file", 0o700)  # type: ignore[index]
    assert (tmp_path / "dest" / "bin" / "data").read_bytes() == (src / "lib" / "sub" / "data.bin").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["dest", f"out.{fmt}", "src"]  # no temp file left


@pytest.mark.parametrize("fmt", FORMATS)
def test_reproducible_across_mtimes_and_permissions(fmt: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = tmp_path / "first"
    pack_directory(src, first, fmt)
    for when, exec_mode, file_mode in [(1_000_000_000, 0o700, 0o600), (1_700_000_000, 0o755, 0o664)]:
        touch_all(src, when)
        os.chmod(src / "bin" / "run", exec_mode)
        for f in ("runtime.json", "lib/sub/data.bin"):
            os.chmod(src / f, file_mode)
        again = tmp_path / "again"
        pack_directory(src, again, fmt)
        assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_reproducible_across_creation_order_and_location(fmt: str, tmp_path: Path) -> None:
    a = make_tree(tmp_path / "one" / "src")
    b = make_tree(tmp_path / "two" / "elsewhere", reverse=True, exec_mode=0o711, file_mode=0o640)
    touch_all(b, 1_234_567_890)
    pack_directory(a, tmp_path / "a.out", fmt)
    pack_directory(b, tmp_path / "b.out", fmt)
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "b.out").read_bytes()


def test_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path / "src")
    pack_directory(src, tmp_path / "default.tgz")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pack_directory(src, tmp_path / "sde.tgz")
    with tarfile.open(tmp_path / "default.tgz") as tf:
        assert {m.mtime for m in tf.getmembers()} == {DEFAULT_MTIME}
    with tarfile.open(tmp_path / "sde.tgz") as tf:
        assert {m.mtime for m in tf.getmembers()} == {1_700_000_000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "garbage")
    pack_directory(src, tmp_path / "garbage.tgz")
    assert (tmp_path / "garbage.tgz").read_bytes() == (tmp_path / "default.tgz").read_bytes()


def test_tar_metadata_is_normalized(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", exec_mode=0o700, file_mode=0o600)
    out = tmp_path / "out.tgz"
    pack_directory(src, out)
    raw = out.read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0, "gzip header must not carry a file name"
    assert raw[4:8] == b"\x00\x00\x00\x00", "gzip header mtime must be 0"
    with tarfile.open(out) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and names[0] == "package"
    assert all(n == "package" or n.startswith("package/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", DEFAULT_MTIME)
        if m.isdir() or m.name == "package/bin/run":
            assert m.mode == 0o755
        elif m.isreg():
            assert m.mode == 0o644
    links = {m.name: m.linkname for m in members if m.issym()}
    assert links == {"package/bin/data": "../lib/sub/data.bin", "package/subdir": "lib/sub"}


def test_zip_metadata_is_normalized(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", exec_mode=0o700, file_mode=0o600)
    out = tmp_path / "out.zip"
    pack_directory(src, out, "zip", wrap=None)
    with zipfile.ZipFile(out) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert list(infos) == sorted(infos)
        assert zf.read("bin/data") == b"../lib/sub/data.bin"
    assert {i.date_time for i in infos.values()} == {(2000, 1, 1, 0, 0, 0)}
    assert stat.S_ISLNK(infos["bin/data"].external_attr >> 16)
    assert infos["bin/run"].external_attr >> 16 == stat.S_IFREG | 0o755
    assert infos["runtime.json"].external_attr >> 16 == stat.S_IFREG | 0o644
    assert infos["empty/"].external_attr >> 16 == stat.S_IFDIR | 0o755
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in infos)


def test_7z_metadata_is_normalized(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", exec_mode=0o700, file_mode=0o600)
    out = tmp_path / "out.7z"
    pack_directory(src, out, "7z")
    with py7zr.SevenZipFile(out) as sz:
        files = {f.filename: f for f in sz.files}
    assert list(files) == sorted(files)
    assert files["package/bin/data"].is_symlink
    assert files["package/bin/run"].posix_mode == 0o755
    assert files["package/runtime.json"].posix_mode == 0o644
    assert files["package/empty"].is_directory
    assert {f.lastwritetime for f in files.values()} == {(DEFAULT_MTIME + 11644473600) * 10_000_000}


def test_unwrapped_archive_has_no_prefix(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    pack_directory(src, tmp_path / "out.tgz", wrap=None)
    with tarfile.open(tmp_path / "out.tgz") as tf:
        assert "runtime.json" in tf.getnames() and "package" not in tf.getnames()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "../../..", "lib/../../outside", "inner"])
def test_symlink_outside_source_refused(fmt: str, target: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (tmp_path / "outside").write_text("secret")
    if target == "inner":
        # Each link alone looks inside; the chain through "hop" leaves the source.
        os.symlink("..", src / "lib" / "hop")
        os.symlink("lib/hop/../outside", src / "inner")
    else:
        os.symlink(target, src / "bad")
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        pack_directory(src, out, fmt)
    assert sorted(os.listdir(tmp_path)) == ["outside", "src"]


def test_special_files_refused(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    os.mkfifo(src / "fifo")
    with pytest.raises(UnsafeArchiveError, match="special"):
        pack_directory(src, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_bad_arguments(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    with pytest.raises(ValueError, match="format"):
        pack_directory(src, tmp_path / "out", "rar")
    for wrap in ("", "..", "a/b", "."):
        with pytest.raises(ValueError, match="wrap"):
            pack_directory(src, tmp_path / "out", wrap=wrap)
    with pytest.raises(NotADirectoryError):
        pack_directory(src / "runtime.json", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_replaces_existing_output_and_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path / "src")
    out = tmp_path / "out.tgz"
    out.write_bytes(b"old")
    pack_directory(src, out)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    good = out.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(gzip.GzipFile, "write", broken)
    with pytest.raises(OSError, match="disk on fire"):
        pack_directory(src, out)
    assert out.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["out.tgz", "src"]


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for fmt in FORMATS:
        pack_directory(tmp_path / "src", tmp_path / f"out.{fmt}", fmt)
        safe_extract(tmp_path / f"out.{fmt}", tmp_path / f"dest-{fmt}")
        assert os.listdir(tmp_path / f"dest-{fmt}") == []
