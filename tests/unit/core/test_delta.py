"""Delta encode and apply on real trees: what is rebuilt, and every way it must refuse."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard as zstd

from desktop.core.delta import (
    DeltaError,
    DeltaLimits,
    EncodeOptions,
    FileManifest,
    apply_delta,
    build_delta,
    scan_manifest,
    should_publish,
    verify_tree,
)
from desktop.core.delta.format import MAGIC, OP_END, OP_FILE, PIECE_BSDIFF, DeltaHeader, DeltaWriter
from desktop.core.delta.manifest import FILE
from desktop.core.errors import CancelledError, DiskSpaceError, TransientError
from desktop.core.tree import walk

KB = 1024


def _text(rnd: random.Random, size: int) -> bytes:
    words = [b"def", b"return", b"self", b"import", b"value", b"None", b"items", b"(", b")", b":", b"\n    "]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" " + rnd.randbytes(3).hex().encode() + b" "
    return bytes(out[:size])


def _release_a(root: Path, rnd: random.Random) -> Path:
    for d in ("app", "lib", "lib/sub", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(40):
        (root / "app" / f"mod{i}.py").write_bytes(_text(rnd, rnd.randint(50, 6000)))
    (root / "lib" / "core.so").write_bytes(_text(rnd, 300 * KB) + rnd.randbytes(200 * KB))
    (root / "lib" / "sub" / "moved.txt").write_bytes(_text(rnd, 3000))
    (root / "data" / "empty").write_bytes(b"")
    (root / "data" / "removed.bin").write_bytes(rnd.randbytes(5000))
    (root / "bin").mkdir()
    (root / "bin" / "run").write_bytes(b"#!/bin/sh\nexec python app/mod0.py\n")
    os.chmod(root / "bin" / "run", 0o755)
    os.symlink("../lib/core.so", root / "bin" / "core-link")
    os.symlink("sub", root / "lib" / "sub-link")
    (root / "runtime.json").write_text('{"name": "x", "version": "1.0.0", "entry": "app/mod0.py"}')
    return root


def _release_b(a: Path, b: Path, rnd: random.Random) -> Path:
    shutil.copytree(a, b, symlinks=True)
    for i in (3, 7, 11):  # small edits
        path = b / "app" / f"mod{i}.py"
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2] = b"# changed\n"
        path.write_bytes(bytes(data))
    core = bytearray((b / "lib" / "core.so").read_bytes())
    core[100 * KB:100 * KB + 64] = rnd.randbytes(64)
    core[400 * KB:400 * KB] = rnd.randbytes(1000)
    (b / "lib" / "core.so").write_bytes(bytes(core))
    os.rename(b / "lib" / "sub" / "moved.txt", b / "data" / "moved.txt")  # same content, other place
    (b / "data" / "removed.bin").unlink()
    (b / "app" / "added.py").write_bytes(_text(rnd, 4000))
    (b / "app" / "dup.py").write_bytes((b / "app" / "mod1.py").read_bytes())
    os.chmod(b / "app" / "mod2.py", 0o755)  # mode only
    (b / "bin" / "core-link").unlink()
    os.symlink("../app/added.py", b / "bin" / "core-link")
    (b / "newdir" / "deeper").mkdir(parents=True)
    (b / "runtime.json").write_text('{"name": "x", "version": "2.0.0", "entry": "app/mod0.py"}')
    return b


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FileManifest, Path, FileManifest, Path]:
    work = tmp_path_factory.mktemp("delta")
    rnd = random.Random(7)
    a = _release_a(work / "a", rnd)
    b = _release_b(a, work / "b", rnd)
    ma, mb = scan_manifest(a), scan_manifest(b)
    delta = work / "a-b.delta"
    build_delta(a, ma, b, mb, delta, base_version="1.0.0", target_version="2.0.0")
    return a, ma, b, mb, delta


def _same_tree(x: Path, y: Path) -> None:
    """Same entries, same bytes, same executable bits (a version is private: 0o7xx/0o6xx)."""
    def describe(root: Path) -> dict[str, tuple[str, bool, str]]:
        out = {}
        for e in walk(root):
            if e.is_link:
                out[e.rel] = ("link", False, os.readlink(e.path))
            elif e.is_dir:
                out[e.rel] = ("dir", True, "")
            else:
                out[e.rel] = ("file", bool(e.st.st_mode & 0o100),
                              hashlib.sha256(Path(e.path).read_bytes()).hexdigest())
        return out

    assert describe(x) == describe(y)


def _reader(data: bytes) -> Callable[[int], bytes]:
    return io.BytesIO(data).read


def _apply(delta: bytes, a: Path, ma: FileManifest, mb: FileManifest | str, dest: Path, **kw: object) -> object:
    return apply_delta(_reader(delta), a, ma, mb, dest, **kw)  # type: ignore[arg-type]


def test_changed_added_removed_moved_files_links_and_modes_rebuild_b_exactly(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, b, mb, delta = releases
    seen: list[tuple[int, int]] = []
    stats = apply_delta(_reader(delta.read_bytes()), a, ma, mb.digest, tmp_path / "out",
                        progress=lambda d, t: seen.append((d, t)))
    assert stats.manifest == mb
    _same_tree(tmp_path / "out", b)
    assert verify_tree(tmp_path / "out", mb) == []
    assert stats.files == len(mb.files) and stats.files_copied >= len(mb.files) - 6
    assert seen[-1] == (mb.total_size, mb.total_size)
    assert all(x[0] <= y[0] for x, y in zip(seen, seen[1:], strict=False))
    # smaller than the changed content itself: the encoder referred to the old files
    assert delta.stat().st_size < 12 * KB


def test_applied_files_are_copies_never_hard_links(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    _apply(delta.read_bytes(), a, ma, mb, tmp_path / "out")
    out_file = tmp_path / "out" / "app" / "mod0.py"
    base_file = a / "app" / "mod0.py"
    assert out_file.stat().st_nlink == 1 and out_file.stat().st_ino != base_file.stat().st_ino
    before = base_file.read_bytes()
    out_file.write_bytes(b"a runtime rewrites its own file")
    assert base_file.read_bytes() == before


def test_identical_trees_give_a_tiny_delta_that_copies_everything(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, *_ = releases
    stats = build_delta(a, ma, a, ma, tmp_path / "same.delta", base_version="1", target_version="1")
    assert stats.files_copied == stats.files and stats.files_encoded == stats.files_new == 0
    assert stats.delta_bytes < 2 * KB
    applied = apply_delta(_reader(Path(tmp_path / "same.delta").read_bytes()), a, ma, ma, tmp_path / "out")
    assert applied.files_copied == applied.files
    _same_tree(tmp_path / "out", a)


def test_reads_of_any_size_work_as_from_a_network(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, b, mb, delta = releases
    source = io.BytesIO(delta.read_bytes())
    rnd = random.Random(3)

    def dribble(n: int) -> bytes:
        return source.read(min(n, rnd.randint(1, 700)))

    apply_delta(dribble, a, ma, mb, tmp_path / "out")
    _same_tree(tmp_path / "out", b)


def _assert_refused(delta: bytes, a: Path, ma: FileManifest, mb: FileManifest | str, dest: Path,
                    match: str, **kw: object) -> None:
    with pytest.raises(DeltaError, match=match) as info:
        _apply(delta, a, ma, mb, dest, **kw)
    assert isinstance(info.value, TransientError)
    assert "\n" not in str(info.value)
    assert not dest.exists()


@pytest.mark.parametrize("victim", ["app/mod0.py", "lib/core.so"])  # copied as is / patched against
def test_base_file_modified_on_disk_is_refused_and_dest_removed(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path, victim: str) -> None:
    a, ma, _, mb, delta = releases
    base = tmp_path / "base"
    shutil.copytree(a, base, symlinks=True)
    data = bytearray((base / victim).read_bytes())
    data[len(data) // 3] ^= 0x55  # same size: only the content check can see it
    (base / victim).write_bytes(bytes(data))
    _assert_refused(delta.read_bytes(), base, ma, mb, tmp_path / "out", "does not match|changed on disk")


def test_missing_or_truncated_base_file_is_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    base = tmp_path / "base"
    shutil.copytree(a, base, symlinks=True)
    (base / "app" / "mod5.py").unlink()
    _assert_refused(delta.read_bytes(), base, ma, mb, tmp_path / "out", "missing")
    shutil.copy(a / "app" / "mod5.py", base / "app" / "mod5.py")
    with open(base / "lib" / "core.so", "r+b") as fh:
        fh.truncate(1000)
    _assert_refused(delta.read_bytes(), base, ma, mb, tmp_path / "out", "changed on disk")


def test_wrong_base_or_target_manifest_is_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, b, mb, delta = releases
    data = delta.read_bytes()
    _assert_refused(data, b, mb, mb, tmp_path / "out", "another base")
    _assert_refused(data, a, ma, ma, tmp_path / "out", "signed target manifest")
    _assert_refused(data, a, ma, "ab" * 32, tmp_path / "out", "signed target manifest")


def test_every_truncation_is_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    data = delta.read_bytes()
    for cut in sorted({0, 5, 12, 40, len(data) // 3, len(data) // 2, len(data) - 33, len(data) - 1}):
        _assert_refused(data[:cut], a, ma, mb, tmp_path / "out", "ends early|corrupt|magic")


def test_tampered_bytes_anywhere_are_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    data = delta.read_bytes()
    rnd = random.Random(11)
    spots = {len(MAGIC) + 1, 20, len(data) - 1, len(data) - 40} | {rnd.randrange(len(data)) for _ in range(25)}
    for spot in sorted(spots):
        bad = bytearray(data)
        bad[spot] ^= 0x01
        with pytest.raises(DeltaError):
            _apply(bytes(bad), a, ma, mb, tmp_path / "out")
        assert not (tmp_path / "out").exists(), spot
    _assert_refused(data + b"\x00", a, ma, mb, tmp_path / "out", "after the end")


def test_limits_stop_a_delta_that_is_too_big(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    data = delta.read_bytes()
    _assert_refused(data, a, ma, mb, tmp_path / "out", "larger than the limit",
                    limits=DeltaLimits(max_delta_bytes=len(data) // 2))
    _assert_refused(data, a, ma, mb, tmp_path / "out", "file larger than the limit",
                    limits=DeltaLimits(max_file_bytes=100 * KB))
    _assert_refused(data, a, ma, mb, tmp_path / "out", "more than 10 entries", limits=DeltaLimits(max_files=10))


def test_cancel_stops_and_removes_dest(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 20

    with pytest.raises(CancelledError):
        _apply(delta.read_bytes(), a, ma, mb, tmp_path / "out", cancel=cancel)
    assert not (tmp_path / "out").exists()


def test_existing_dest_is_left_alone(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        _apply(delta.read_bytes(), a, ma, mb, tmp_path / "out")
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def _crafted(ma: FileManifest, mb: FileManifest, records: Callable[[DeltaWriter], None]) -> bytes:
    """A well-formed delta stream (valid end digest) whose records say what the test wants."""
    from desktop.core.delta.codec import zref_encode

    out = io.BytesIO()
    w = DeltaWriter(out)
    w.start(DeltaHeader("1", ma.digest, "2", mb.digest), zref_encode(ma.to_bytes(), mb.to_bytes(), 3))
    records(w)
    w.end()
    return out.getvalue()


def test_records_that_point_outside_the_base_are_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, _ = releases
    first = mb.files[0]
    for base_path in ("../../etc/passwd", "/etc/passwd", "bin/core-link", "no/such/file"):
        data = _crafted(ma, mb, lambda w, p=base_path: w.copy(0, p, first.path))  # type: ignore[misc]
        _assert_refused(data, a, ma, mb, tmp_path / "out", "not a file of the base")
    other = next(e for e in ma.files if e.sha256 != first.sha256)
    _assert_refused(_crafted(ma, mb, lambda w: w.copy(0, other.path, first.path)), a, ma, mb, tmp_path / "out",
                    "is not the content of")

    core = ma.get("lib/core.so")
    assert core is not None

    _assert_refused(_crafted(ma, mb, lambda w: w.run(0, len(mb.files) + 1)), a, ma, mb, tmp_path / "out",
                    "past the last file")

    def out_of_range(w: DeltaWriter) -> None:
        w.file(0, core.path, first.path)
        w.piece_range(core.size - 10, 100)

    _assert_refused(_crafted(ma, mb, out_of_range), a, ma, mb, tmp_path / "out", "bad range piece")

    def huge_window(w: DeltaWriter) -> None:
        w.file(0, core.path, first.path)
        w.piece_ref(PIECE_BSDIFF, 0, core.size + 1, 10, b"x")

    _assert_refused(_crafted(ma, mb, huge_window), a, ma, mb, tmp_path / "out", "bad reference window")


def test_hostile_bsdiff_control_block_is_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    from desktop.core.delta.codec import raw_encode
    from desktop.core.delta.format import pack_bsdiff

    a, ma, _, mb, _ = releases
    first = mb.files[0]
    core = ma.get("lib/core.so")
    assert core is not None
    negative = struct.pack("<q", 0) + (1 << 63 | 5).to_bytes(8, "little") + struct.pack("<q", 0)

    def hostile(w: DeltaWriter) -> None:
        w.file(0, core.path, first.path)
        w.piece_ref(PIECE_BSDIFF, 0, 1000, first.size, raw_encode(pack_bsdiff(negative, b"", b"\0" * first.size), 3))

    _assert_refused(_crafted(ma, mb, hostile), a, ma, mb, tmp_path / "out", "negative length")


def test_records_out_of_order_are_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, _ = releases

    def skip_first(w: DeltaWriter) -> None:
        w.raw(bytes([OP_FILE]) + struct.pack(">I", 1))

    _assert_refused(_crafted(ma, mb, skip_first), a, ma, mb, tmp_path / "out", "unexpected record")
    _assert_refused(_crafted(ma, mb, lambda w: None), a, ma, mb, tmp_path / "out", "unexpected record")
    assert OP_END == 0xFF


def _shifted_code(rnd: random.Random, size: int, base: int) -> bytes:
    out = bytearray()
    ops = [rnd.randbytes(rnd.choice((1, 2, 3))) for _ in range(200)]
    while len(out) < size:
        out += rnd.choice(ops) + (base + rnd.randrange(1 << 16)).to_bytes(4, "little")
    return bytes(out[:size])


def test_relocated_code_is_encoded_with_bsdiff_and_text_edits_with_zstd(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "code.so").write_bytes(_shifted_code(random.Random(1), 1024 * KB, 0x400000))
    (b / "code.so").write_bytes(_shifted_code(random.Random(1), 1024 * KB, 0x401000))  # every address moved
    text = _text(random.Random(2), 20 * KB)
    (a / "notes.py").write_bytes(text)
    (b / "notes.py").write_bytes(text[:5000] + b"# edit\n" + text[5000:])
    ma, mb = scan_manifest(a), scan_manifest(b)
    stats = build_delta(a, ma, b, mb, tmp_path / "d", base_version="1", target_version="2")
    assert stats.pieces["bsdiff"] == 1 and stats.pieces["zstd-ref"] == 1
    assert stats.payload_bytes["zstd-ref"] < 200
    apply_delta(_reader(Path(tmp_path / "d").read_bytes()), a, ma, mb, tmp_path / "out")
    _same_tree(tmp_path / "out", b)
    # bsdiff is only tried where zstd did poorly, and never beyond its budget
    never = build_delta(a, ma, b, mb, tmp_path / "d2", base_version="1", target_version="2",
                        options=EncodeOptions(bsdiff_budget=0))
    assert never.pieces["bsdiff"] == 0 and never.delta_bytes > stats.delta_bytes


def test_insertions_keep_later_pieces_as_byte_ranges(tmp_path: Path) -> None:
    rnd = random.Random(5)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    old = _shifted_code(rnd, 6 * 1024 * KB, 0x10000)
    new = old[:1000 * KB] + rnd.randbytes(5000) + old[1000 * KB:3000 * KB] + old[3100 * KB:]
    (a / "big.bin").write_bytes(old)
    (b / "big.bin").write_bytes(new)
    ma, mb = scan_manifest(a), scan_manifest(b)
    options = EncodeOptions(chunk_size=512 * KB, margin=128 * KB)
    stats = build_delta(a, ma, b, mb, tmp_path / "d", base_version="1", target_version="2", options=options)
    assert stats.pieces["range"] >= 2 and stats.delta_bytes < 40 * KB
    apply_delta(_reader(Path(tmp_path / "d").read_bytes()), a, ma, mb, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == new


def test_disk_full_is_reported_as_such_and_dest_removed(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    a, ma, _, mb, delta = releases
    small = tmp_path / "small"
    small.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(DiskSpaceError):
            _apply(delta.read_bytes(), a, ma, mb, small / "out")
        assert not (small / "out").exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_should_publish() -> None:
    assert should_publish(69, 100)
    assert should_publish(70, 100)
    assert not should_publish(71, 100)
    assert not should_publish(0, 0)
    assert should_publish(50, 100, min_saving=0.5) and not should_publish(51, 100, min_saving=0.5)


def test_manifest_files_and_records_agree(releases: tuple[Path, FileManifest, Path, FileManifest, Path]) -> None:
    *_, mb, _ = releases
    assert all(e.kind == FILE for e in mb.files)
    assert [e.path for e in mb.files] == sorted(e.path for e in mb.files)


def test_new_files_share_one_stream_primed_with_their_old_neighbours(tmp_path: Path) -> None:
    rnd = random.Random(9)
    names = [rnd.randbytes(5).hex() for _ in range(300)]  # one project's identifiers

    def source(size: int) -> bytes:
        return " ".join(rnd.choice(names) + rnd.choice(("(", " = ", ".", ")\n")) for _ in range(size // 8)).encode()

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "pkg").mkdir(parents=True)
    for i in range(6):
        (a / "pkg" / f"old{i}.py").write_bytes(source(8000))
    shutil.copytree(a, b)
    for i in range(5):
        (b / "pkg" / f"new{i}.py").write_bytes(source(3000))
    ma, mb = scan_manifest(a), scan_manifest(b)
    stats = build_delta(a, ma, b, mb, tmp_path / "d", base_version="1", target_version="2")
    assert stats.pieces["stream"] == 5
    alone = sum(len(zstd.ZstdCompressor(level=19).compress((b / "pkg" / f"new{i}.py").read_bytes())) for i in range(5))
    assert stats.payload_bytes["stream"] < 0.8 * alone
    apply_delta(_reader((tmp_path / "d").read_bytes()), a, ma, mb, tmp_path / "out")
    _same_tree(tmp_path / "out", b)
    # the dictionary is read from the base: a changed neighbour is noticed
    with open(a / "pkg" / "old0.py", "r+b") as fh:
        fh.write(b"X")
    _assert_refused((tmp_path / "d").read_bytes(), a, ma, mb, tmp_path / "out2", "changed on disk")


def test_stream_piece_that_decodes_to_more_than_announced_is_refused(
        releases: tuple[Path, FileManifest, Path, FileManifest, Path], tmp_path: Path) -> None:
    from desktop.core.delta.codec import StreamEncoder
    from desktop.core.delta.format import PIECE_STREAM

    a, ma, _, mb, _ = releases
    first = mb.files[0]
    bomb = StreamEncoder(b"", 3).piece(b"\0" * (8 * 1024 * 1024))

    def hostile(w: DeltaWriter) -> None:
        w.file(0, None, first.path)
        w.piece_raw(first.size, bomb, PIECE_STREAM)

    _assert_refused(_crafted(ma, mb, hostile), a, ma, mb, tmp_path / "out", "more than announced")


def test_long_runs_of_unchanged_files_copy_in_parallel_and_still_refuse_a_changed_one(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "many").mkdir(parents=True)
    for i in range(400):
        (a / "many" / f"f{i:03d}.txt").write_bytes(f"file {i}\n".encode() * (i + 1))
    ma = scan_manifest(a)
    build_delta(a, ma, a, ma, tmp_path / "d", base_version="1", target_version="1")
    data = (tmp_path / "d").read_bytes()
    assert len(data) < 1024  # one run record
    stats = _apply(data, a, ma, ma, tmp_path / "out")
    _same_tree(tmp_path / "out", a)
    assert stats.files_copied == 400  # type: ignore[attr-defined]

    calls: list[int] = []
    with pytest.raises(CancelledError):
        _apply(data, a, ma, ma, tmp_path / "cancelled", cancel=lambda: calls.append(1) or len(calls) > 150)
    assert not (tmp_path / "cancelled").exists()

    (a / "many" / "f321.txt").write_bytes(b"X" + (a / "many" / "f321.txt").read_bytes()[1:])
    _assert_refused(data, a, ma, ma, tmp_path / "changed", "f321.txt changed on disk")
