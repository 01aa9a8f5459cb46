"""Version parsing, ordering and path safety (property-based)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from desktop.core.paths import DataDir
from desktop.core.versions import admits, is_upgrade, newest, parse_version

version_strings = st.builds(
    lambda parts, suffix: ".".join(str(p) for p in parts) + suffix,
    st.lists(st.integers(0, 999), min_size=1, max_size=4),
    st.sampled_from(["", "a1", "b2", "rc1", ".dev3", ".post1", "rc1.post2"]),
)


@given(version_strings, version_strings)
def test_ordering_matches_packaging(a: str, b: str) -> None:
    va, vb = parse_version(a), parse_version(b)
    assert va is not None and vb is not None
    assert is_upgrade(va, vb) == (Version(a) > Version(b))
    assert newest([va, None, vb]) == max(Version(a), Version(b))


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_any_string_is_either_a_version_or_ignored(text: str) -> None:
    version = parse_version(text)
    if version is not None:
        assert str(version) == str(Version(text))


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_version_paths_never_leave_versions_dir(text: str) -> None:
    data = DataDir(Path("/data"))
    version = parse_version(text)
    if version is None:
        return
    for path in (data.version_dir(version), data.partial_dir(version)):
        assert path.parent == data.versions_dir
        assert "/" not in path.name and path.name not in (".", "..")


def test_invalid_versions_are_ignored() -> None:
    for text in ["", "latest", "../../x", "1.0/evil", None, 3, "v" * 100]:
        assert parse_version(text) is None


def test_host_gate() -> None:
    assert admits(None, "1.0.0")
    assert admits(">=1.0", "1.0.0")
    assert not admits(">=2.0", "1.0.0")
    assert not admits("not a specifier", "1.0.0")
