"""safe_extract's engine: deep trees, member counting, tar.zst, streaming while downloading, durability."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from backports import zstd

from desktop.core.archive import (
    ExtractLimits,
    detect_format,
    engine,
    make_durable,
    safe_extract,
    safe_extract_stream,
)
from desktop.core.archive import durable as durable_module
from desktop.core.errors import CancelledError, DownloadError, UnsafeArchiveError
from desktop.core.pack import pack_directory
from tests.support.server import LoopbackServer
from tests.unit.core.test_archive import BUILDERS, FORMATS, M, MiB, assert_refused, snapshot, tree

REPO = Path(__file__).resolve().parents[3]
DEEP = 1200  # Python 3.11's recursive os.walk / shutil.rmtree / realpath fail near 1,000
TAR_FORMATS = ["tar.gz", "tar.zst"]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "w" / "x"
    d.mkdir(parents=True)
    return d


def _deep_members(depth: int, leaf: str = "d") -> list[M]:
    members = [M("/".join([leaf] * i), "dir") for i in range(1, depth + 1)]
    bottom = "/".join([leaf] * depth)
    members.append(M(f"{bottom}/runtime.json", data=b"{}"))
    members.append(M(f"{bottom}/up", "symlink", target="../" * depth + "top.txt"))
    members.append(M("top.txt", data=b"top"))
    return members


class _OpenCounter:
    """Counts files and directories created through os.open / os.mkdir while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created = 0
        real_open, real_mkdir = os.open, os.mkdir

        def counting_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
            fd = real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]
            if flags & os.O_CREAT:
                self.created += 1
            return fd

        def counting_mkdir(path: str, *args: object, **kwargs: object) -> None:
            real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]
            if ".extract-" not in os.path.basename(path):  # the staging directory itself
                self.created += 1

        monkeypatch.setattr(os, "open", counting_open)
        monkeypatch.setattr(os, "mkdir", counting_mkdir)


# --------------------------------------------------------------------------- no recursion


@pytest.mark.parametrize("fmt", FORMATS)
def test_release_nested_1200_directories_deep_extracts(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = BUILDERS[fmt](tmp_path / f"deep.{fmt}", _deep_members(DEEP))
    dest = work / "dest"
    safe_extract(archive, dest)
    bottom = dest.joinpath(*["d"] * DEEP)
    assert (bottom / "runtime.json").read_bytes() == b"{}"
    assert (bottom / "up").read_bytes() == b"top"
    assert sorted(os.listdir(work)) == ["dest"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_deep_release_refused_at_its_last_member_leaves_nothing(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = BUILDERS[fmt](tmp_path / f"deep.{fmt}", [*_deep_members(DEEP), M("../evil", data=b"x")])
    assert_refused(archive, work, match=r"'\.\.'")


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_path_longer_than_the_system_allows_is_refused_in_one_line(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = BUILDERS[fmt](tmp_path / f"long.{fmt}", _deep_members(30, leaf="n" * 200))
    err = assert_refused(archive, work, match="not usable here")
    assert len(str(err)) <= 400


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_symlink_chain_longer_than_the_kernel_follows_is_refused(fmt: str, tmp_path: Path, work: Path) -> None:
    # Each link is inside and points at the next: realpath recursed once per link.
    chain = [M(f"l{i}", "symlink", target=f"l{i + 1}") for i in range(DEEP, 0, -1)]
    archive = BUILDERS[fmt](tmp_path / f"chain.{fmt}", [M(f"l{DEEP + 1}", data=b"end"), *chain])
    assert_refused(archive, work, match="too many links")


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_symlink_chain_within_the_kernel_limit_is_kept(fmt: str, tmp_path: Path, work: Path) -> None:
    chain = [M(f"l{i}", "symlink", target=f"l{i + 1}") for i in range(30, 0, -1)]
    archive = BUILDERS[fmt](tmp_path / f"chain.{fmt}", [M("l31", data=b"end"), *chain])
    safe_extract(archive, work / "dest")
    assert (work / "dest" / "l1").read_bytes() == b"end"


def _mkdir_deep(root: Path, depth: int) -> Path:
    """pathlib's and os's makedirs recurse once per missing level."""
    path = root
    for _ in range(depth):
        path = path / "d"
        os.mkdir(path)
    return path


def test_pack_directory_packs_a_1200_deep_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    bottom = _mkdir_deep(src, DEEP)
    (bottom / "runtime.json").write_text("{}")
    for fmt in ("tar.gz", "tar.zst"):
        pack_directory(src, tmp_path / f"out.{fmt}", fmt)
        safe_extract(tmp_path / f"out.{fmt}", tmp_path / f"dest-{fmt}")
        assert (tmp_path / f"dest-{fmt}").joinpath(*["d"] * DEEP, "runtime.json").read_text() == "{}"


# --------------------------------------------------------------------------- member caps


def _files_in_dirs(files: int, per_dir: int) -> list[M]:
    members: list[M] = []
    for i in range(files):
        if i % per_dir == 0:
            members.append(M(f"package/d{i // per_dir}", "dir"))
        members.append(M(f"package/d{i // per_dir}/f{i}", data=b"x"))
    return members


@pytest.mark.parametrize("fmt", FORMATS)
def test_member_cap_counts_files_not_directories(fmt: str, tmp_path: Path, work: Path) -> None:
    # 60 files in 30 directories: 90 members, under a 60-file cap.
    archive = BUILDERS[fmt](tmp_path / f"a.{fmt}", _files_in_dirs(60, 2))
    safe_extract(archive, tmp_path / "ok", ExtractLimits(max_members=60))
    assert len(os.listdir(tmp_path / "ok")) == 30
    assert_refused(archive, work, match="more than 59 members", limits=ExtractLimits(max_members=59))


@pytest.mark.parametrize("fmt", FORMATS)
def test_directory_cap(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = BUILDERS[fmt](tmp_path / f"a.{fmt}", _files_in_dirs(10, 1))
    assert_refused(archive, work, match="more than 9 directories", limits=ExtractLimits(max_directories=9))


@pytest.mark.parametrize("fmt", ["zip", "7z"])
def test_over_cap_archive_refused_from_its_index_before_writing(fmt: str, tmp_path: Path, work: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    archive = BUILDERS[fmt](tmp_path / f"a.{fmt}", _files_in_dirs(40, 4))
    counter = _OpenCounter(monkeypatch)
    assert_refused(archive, work, match="more than 30 members", limits=ExtractLimits(max_members=30))
    assert counter.created == 0


def test_tar_over_cap_stops_at_the_first_file_over(tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = BUILDERS["tar.gz"](tmp_path / "a.tgz", [M(f"f{i}", data=b"x") for i in range(40)])
    counter = _OpenCounter(monkeypatch)
    assert_refused(archive, work, match="more than 30 members", limits=ExtractLimits(max_members=30))
    assert counter.created == 30


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_tar_declaring_too_much_is_refused_before_writing(fmt: str, tmp_path: Path, work: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 files of 512 KiB: each passes the per-member checks; the stream's declared size does not.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for i in range(40):
            info = tarfile.TarInfo(f"f{i}")
            info.size = MiB // 2
            tf.addfile(info, io.BytesIO(bytes(info.size)))
    archive = tmp_path / f"a.{fmt}"
    if fmt == "tar.gz":
        import gzip

        archive.write_bytes(gzip.compress(raw.getvalue(), 1))
    else:  # a one-shot zstd frame records its content size
        archive.write_bytes(zstd.compress(raw.getvalue(), options={zstd.CompressionParameter.checksum_flag: 1}))
    limits = ExtractLimits(max_total_bytes=MiB, max_members=100, max_directories=10)  # stream cap ~17.8 MiB
    counter = _OpenCounter(monkeypatch)
    assert_refused(archive, work, match="total size limit", limits=limits)
    assert counter.created == 0


def test_tar_zst_without_checksum_refused(tmp_path: Path, work: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("a"), io.BytesIO())
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(zstd.compress(raw.getvalue()))
    assert_refused(archive, work, match="checksum")


def test_tar_zst_window_over_the_decoder_limit_refused(tmp_path: Path, work: Path) -> None:
    # A 128 MiB window (zstd --long=27) would cost that much memory to decode.
    options = {zstd.CompressionParameter.window_log: 27, zstd.CompressionParameter.checksum_flag: 1}
    with zstd.ZstdFile(tmp_path / "a.tar.zst", "w", options=options) as zf, tarfile.open(fileobj=zf, mode="w") as tf:
        info = tarfile.TarInfo("big")
        info.size = 40 * MiB
        tf.addfile(info, io.BytesIO(os.urandom(MiB) * 40))
    assert_refused(tmp_path / "a.tar.zst", work, match="corrupt or unreadable tar.zst")


@pytest.mark.slow
def test_90k_file_release_extracts_under_the_default_cap(tmp_path: Path, work: Path) -> None:
    src = tmp_path / "src"
    for d in range(11_000):
        (src / f"d{d // 100}" / f"e{d}").mkdir(parents=True)
    for i in range(90_000):
        (src / f"d{(i % 11_000) // 100}" / f"e{i % 11_000}" / f"f{i}").touch()
    archive = tmp_path / "big.tgz"
    pack_directory(src, archive, level=1)
    safe_extract(archive, work / "dest")
    assert sum(len(files) for _, _, files in os.walk(work / "dest")) == 90_000


# --------------------------------------------------------------------------- engine


def test_engine_is_isa_l(tmp_path: Path) -> None:
    assert engine() == "isal"


def test_without_isal_the_zlib_path_extracts_and_refuses(tmp_path: Path) -> None:
    good = BUILDERS["tar.gz"](tmp_path / "good.tgz", [M("package/runtime.json", data=b"{}"), M("package/bin/x")])
    bad = bytearray(good.read_bytes())
    bad[-6] ^= 0xFF  # the gzip CRC
    (tmp_path / "bad.tgz").write_bytes(bytes(bad))
    code = (
        "import sys\n"
        "sys.modules['isal'] = None  # as if the wheel were missing\n"
        "from pathlib import Path\n"
        "from desktop.core.archive import engine, safe_extract\n"
        "from desktop.core.errors import UnsafeArchiveError\n"
        "t = Path(sys.argv[1])\n"
        "safe_extract(t / 'good.tgz', t / 'out')\n"
        "try:\n"
        "    safe_extract(t / 'bad.tgz', t / 'out2')\n"
        "except UnsafeArchiveError as exc:\n"
        "    print('refused:', exc)\n"
        "print(engine(), sorted(p.name for p in (t / 'out').iterdir()), (t / 'out2').exists())\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    lines = done.stdout.strip().splitlines()
    assert "CRC" in lines[0]
    assert lines[-1] == "zlib ['bin', 'runtime.json'] False"


def test_extraction_never_syncs(tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("extraction must leave durability to the caller")

    archive = BUILDERS["tar.gz"](tmp_path / "a.tgz", [M("a", data=b"a")])
    monkeypatch.setattr(os, "fsync", refuse)
    monkeypatch.setattr(os, "sync", refuse)
    monkeypatch.setattr(os, "fdatasync", refuse)
    safe_extract(archive, work / "dest")


# --------------------------------------------------------------------------- streaming


def _reader(data: bytes, most: int) -> tuple[Callable[[int], bytes], list[int]]:
    """read(n) over `data`, at most `most` bytes at a time; also returns the sizes handed out."""
    src = io.BytesIO(data)
    handed: list[int] = []

    def read(n: int) -> bytes:
        chunk = src.read(min(n, most))
        handed.append(len(chunk))
        return chunk

    return read, handed


def _sample(fmt: str, tmp_path: Path) -> Path:
    return BUILDERS[fmt](tmp_path / f"s.{fmt}", [
        M("package/runtime.json", data=b"{}"), M("package/bin/run", data=b"#!/bin/sh\n", mode=0o755),
        M("package/lib/big.bin", data=os.urandom(3 * MiB)), M("package/link", "symlink", target="bin/run"),
    ])


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_stream_extracts_the_same_tree_and_reads_to_the_end(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = _sample(fmt, tmp_path)
    safe_extract(archive, work / "from-file")
    read, handed = _reader(archive.read_bytes(), 1000)
    seen: list[int] = []
    safe_extract_stream(read, work / "from-stream", fmt, progress=seen.append)
    assert tree(work / "from-stream") == tree(work / "from-file")
    assert sum(handed) == archive.stat().st_size and handed[-1] == 0
    assert seen[-1] == 3 * MiB + 2 + 10


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_stream_extracts_while_the_archive_downloads(fmt: str, tmp_path: Path, work: Path) -> None:
    archive = _sample(fmt, tmp_path)
    digest = hashlib.sha256()
    with LoopbackServer() as server:
        server.put_file("/a", archive)
        server.fault("/a", "slow", chunk=64 * 1024, delay=0.005)
        with httpx.stream("GET", f"{server.url}/a", headers={"Accept-Encoding": "identity"}) as response:
            chunks: Iterator[bytes] = response.iter_raw(64 * 1024)
            pending = b""
            first_write_at: list[int] = []

            def read(n: int) -> bytes:
                nonlocal pending
                if not pending:
                    pending = next(chunks, b"")
                    digest.update(pending)
                out, pending = pending[:n], pending[n:]
                return out

            def progress(done: int) -> None:
                if not first_write_at:
                    first_write_at.append(response.num_bytes_downloaded)

            safe_extract_stream(read, work / "dest", fmt, progress=progress)
    assert digest.hexdigest() == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (work / "dest" / "lib" / "big.bin").stat().st_size == 3 * MiB
    assert first_write_at[0] < archive.stat().st_size  # extraction started before the download ended


@pytest.mark.parametrize("fmt", TAR_FORMATS)
@pytest.mark.parametrize("fraction", [0.2, 0.6, 0.999])
def test_stream_cut_short_is_refused_and_leaves_nothing(fmt: str, fraction: float, tmp_path: Path,
                                                       work: Path) -> None:
    data = _sample(fmt, tmp_path).read_bytes()
    read, _ = _reader(data[: int(len(data) * fraction)], 4096)
    before = snapshot(work.parent.parent)
    with pytest.raises(UnsafeArchiveError):
        safe_extract_stream(read, work / "dest", fmt)
    assert snapshot(work.parent.parent) == before


def test_stream_passes_the_callers_own_errors_through(tmp_path: Path, work: Path) -> None:
    data = _sample("tar.gz", tmp_path).read_bytes()
    read_ok, _ = _reader(data, 4096)
    calls = 0

    def read(n: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise DownloadError("connection reset")
        return read_ok(n)

    before = snapshot(work.parent.parent)
    with pytest.raises(DownloadError, match="connection reset"):
        safe_extract_stream(read, work / "dest", "tar.gz")
    assert snapshot(work.parent.parent) == before


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_stream_that_is_not_the_archive_is_refused(fmt: str, work: Path) -> None:
    read, _ = _reader(b"<html><body>blocked by proxy</body></html>", 4096)
    with pytest.raises(UnsafeArchiveError, match=f"not a {fmt} archive"):
        safe_extract_stream(read, work / "dest", fmt)
    assert os.listdir(work) == []


def test_stream_cancel(tmp_path: Path, work: Path) -> None:
    read, _ = _reader(_sample("tar.zst", tmp_path).read_bytes(), 4096)
    with pytest.raises(CancelledError):
        safe_extract_stream(read, work / "dest", "tar.zst", cancel=lambda: True)
    assert os.listdir(work) == []


def test_stream_of_zip_is_a_usage_error(work: Path) -> None:
    with pytest.raises(ValueError, match="cannot extract 'zip' from a stream"):
        safe_extract_stream(lambda n: b"", work / "dest", "zip")


def test_stream_from_a_pipe_fed_by_another_thread(tmp_path: Path, work: Path) -> None:
    data = _sample("tar.gz", tmp_path).read_bytes()
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            for i in range(0, len(data), 10_000):
                out.write(data[i:i + 10_000])
                out.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        safe_extract_stream(lambda n: os.read(r, n), work / "dest", "tar.gz")
    finally:
        feeder.join()
        os.close(r)
    assert (work / "dest" / "runtime.json").read_bytes() == b"{}"


# --------------------------------------------------------------------------- tar.zst packing


def test_tar_zst_pack_is_reproducible_and_extracts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "runtime.json").write_text("{}")
    (src / "bin" / "run").write_bytes(b"#!/bin/sh\n" * 1000)
    os.chmod(src / "bin" / "run", 0o700)
    os.symlink("bin/run", src / "run")
    pack_directory(src, tmp_path / "a.tar.zst", "tar.zst")
    os.utime(src / "runtime.json", (1, 1))
    pack_directory(src, tmp_path / "b.tar.zst", "tar.zst")
    assert (tmp_path / "a.tar.zst").read_bytes() == (tmp_path / "b.tar.zst").read_bytes()
    assert detect_format(tmp_path / "a.tar.zst") == "tar.zst"
    head = (tmp_path / "a.tar.zst").read_bytes()[:18]
    assert head[:4] == b"\x28\xb5\x2f\xfd" and head[4] & 0x04  # checksummed frame
    safe_extract(tmp_path / "a.tar.zst", tmp_path / "dest")
    assert stat.S_IMODE((tmp_path / "dest" / "bin" / "run").stat().st_mode) == 0o700
    assert os.readlink(tmp_path / "dest" / "run") == "bin/run"


# --------------------------------------------------------------------------- durability


def _small_tree(root: Path) -> int:
    count = 0
    for d in ("a", "a/b", "c"):
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / d / f"f{i}").write_bytes(b"x" * 100)
            count += 1
    os.symlink("a/f0", root / "link")
    return count


def test_make_durable_uses_syncfs_on_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_tree(tmp_path / "v")
    fsyncs: list[int] = []
    monkeypatch.setattr(os, "fsync", fsyncs.append)
    assert make_durable(tmp_path / "v") == "syncfs"
    assert fsyncs == []


def test_make_durable_falls_back_to_fsync_of_every_file_and_directory(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    files = _small_tree(tmp_path / "v")
    _mkdir_deep(tmp_path / "v", DEEP)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(durable_module, "_libc_syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", fsync)
    assert make_durable(tmp_path / "v") == "fsync"
    regular = [p for p in synced if os.path.isfile(p)]
    directories = [p for p in synced if os.path.isdir(p)]
    assert len(regular) == files
    assert len(directories) == 3 + DEEP + 1  # a, a/b, c, the d chain, the root
    assert str(tmp_path / "v") in directories
