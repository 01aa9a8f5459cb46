"""The file manifest: what the release archive extracts to, serialized canonically, parsed with bounds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from desktop.core.archive import safe_extract
from desktop.core.delta import FileManifest, FileManifestError, ManifestLimits, parse_manifest, scan_manifest
from desktop.core.delta.manifest import ManifestEntry, verify_tree
from desktop.core.errors import UnsafeArchiveError
from desktop.core.pack import pack_directory
from desktop.core.tree import remove_tree

HASH = "0" * 64


def _tree(root: Path) -> Path:
    (root / "app" / "__pycache__").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\x00pyc")
    (root / "app" / "stale.pyc").write_bytes(b"\x00pyc")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o700)
    (root / "bin" / "private.dat").write_bytes(b"data")
    os.chmod(root / "bin" / "private.dat", 0o600)
    (root / "empty").mkdir()
    os.symlink("../app/main.py", root / "bin" / "main-link")
    (root / "runtime.json").write_text('{"name": "x"}')
    return root


def test_manifest_describes_exactly_what_the_archive_extracts_to(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    pack_directory(src, tmp_path / "r.tar.gz")
    safe_extract(tmp_path / "r.tar.gz", tmp_path / "out")
    from_source = scan_manifest(src)
    assert from_source == scan_manifest(tmp_path / "out")
    assert from_source.to_bytes() == scan_manifest(tmp_path / "out").to_bytes()
    paths = [e.path for e in from_source.entries]
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in paths)
    assert paths == sorted(paths)
    tool = from_source.get("bin/tool")
    assert tool is not None and tool.mode == 0o755 and tool.size == 20
    private = from_source.get("bin/private.dat")
    assert private is not None and private.mode == 0o644
    link = from_source.get("bin/main-link")
    assert link is not None and link.kind == "link" and link.target == "../app/main.py"
    empty = from_source.get("empty")
    assert empty is not None and empty.kind == "dir"
    assert verify_tree(tmp_path / "out", from_source) == []


def test_canonical_bytes_round_trip_and_digest_is_stable(tmp_path: Path) -> None:
    manifest = scan_manifest(_tree(tmp_path / "src"))
    data = manifest.to_bytes()
    again = parse_manifest(data)
    assert again == manifest and again.digest == manifest.digest
    doc = json.loads(data)
    assert doc["format"] == "desktop-file-manifest" and doc["version"] == 1
    with pytest.raises(FileManifestError, match="canonical"):
        parse_manifest(json.dumps(doc, indent=1).encode())


def _doc(entries: list[dict[str, object]]) -> bytes:
    return json.dumps({"format": "desktop-file-manifest", "version": 1, "entries": entries},
                      sort_keys=True, separators=(",", ":")).encode()


def _file(path: str, size: int = 1, mode: int = 0o644) -> dict[str, object]:
    return {"path": path, "type": "file", "size": size, "mode": mode, "sha256": HASH}


@pytest.mark.parametrize(("entries", "message"), [
    ([_file("../x")], "clean relative path"),
    ([_file("/etc/passwd")], "clean relative path"),
    ([_file("a//b")], "clean relative path"),
    ([_file("a\\b")], "clean relative path"),
    ([_file("a/./b")], "clean relative path"),
    ([_file("x/y")], "parent is not a directory"),
    ([_file("x"), _file("x/y")], "parent is not a directory"),
    ([_file("b"), _file("a")], "not sorted"),
    ([_file("a"), _file("a")], "not sorted"),
    ([_file("a", mode=0o4755)], "malformed"),
    ([_file("a", size=-1)], "malformed"),
    ([{**_file("a"), "sha256": "XYZ"}], "malformed"),
    ([{**_file("a"), "extra": 1}], "malformed"),
    ([{"path": "l", "type": "link", "target": "../../etc"}], "outside"),
    ([{"path": "l", "type": "link", "target": "/etc"}], "outside"),
    ([{"path": "d", "type": "device"}], "unknown type"),
])
def test_malformed_or_unsafe_manifests_are_refused(entries: list[dict[str, object]], message: str) -> None:
    with pytest.raises(FileManifestError, match=message):
        parse_manifest(_doc(entries))


def test_parse_bounds(tmp_path: Path) -> None:
    entries = [_file(f"f{i:03d}", size=10) for i in range(20)]
    data = _doc(entries)
    assert len(parse_manifest(data).entries) == 20
    with pytest.raises(FileManifestError, match="more than 10 entries"):
        parse_manifest(data, ManifestLimits(max_entries=10))
    with pytest.raises(FileManifestError, match="more than 100 bytes"):
        parse_manifest(data, ManifestLimits(max_total_bytes=100))
    with pytest.raises(FileManifestError, match="larger than"):
        parse_manifest(data, ManifestLimits(max_document_bytes=100))
    with pytest.raises(FileManifestError, match="clean relative path"):
        parse_manifest(_doc([_file("a" * 300)]))
    with pytest.raises(FileManifestError, match="not valid JSON"):
        parse_manifest(b"[" * 100_000)


def test_scan_refuses_what_the_packer_refuses(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("../../outside", src / "escape")
    with pytest.raises(UnsafeArchiveError):
        scan_manifest(src)


def test_verify_tree_reports_every_difference(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    manifest = scan_manifest(root)
    assert verify_tree(root, manifest, ignore_extra=True) == []
    (root / "app" / "main.py").write_text("print('HI')\n")  # same size, other content
    (root / "runtime.json").write_text("{}")
    (root / "bin" / "private.dat").chmod(0o755)
    (root / "bin" / "main-link").unlink()
    os.symlink("../runtime.json", root / "bin" / "main-link")
    (root / "bin" / "tool").unlink()
    (root / "native").mkdir()
    (root / "native" / "lib.so").write_bytes(b"so")
    problems = {(m.path, m.problem) for m in verify_tree(root, manifest)}
    assert problems >= {("app/main.py", "sha256"), ("runtime.json", "size"), ("bin/private.dat", "mode"),
                        ("bin/main-link", "target"), ("bin/tool", "missing"), ("native", "unexpected")}
    assert ("native/lib.so", "unexpected") not in problems  # one line per extra subtree
    extras_ignored = {(m.path, m.problem) for m in verify_tree(root, manifest, ignore_extra=True)}
    assert ("native", "unexpected") not in extras_ignored and ("app/main.py", "sha256") in extras_ignored
    # __pycache__ written by a running runtime is an extra, like native deps
    assert ("app/__pycache__", "unexpected") in problems


def test_verify_tree_handles_a_very_deep_tree(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    path = root
    entries = []
    parts: list[str] = []
    root.mkdir()
    for _ in range(1200):  # os.makedirs recurses
        parts.append("d")
        entries.append(ManifestEntry("/".join(parts), "dir"))
        (root / "/".join(parts)).mkdir()
    manifest = FileManifest(tuple(entries))
    assert verify_tree(path, manifest) == []
    (root / "/".join(parts) / "f").write_bytes(b"x")
    assert [(m.path, m.problem) for m in verify_tree(path, manifest)] == [("/".join(parts) + "/f", "unexpected")]
    remove_tree(root)  # pytest's own clean-up of old temporary directories recurses
