"""Developer and test tools: derive variants of the bundled runtime.

`derive_runtime` makes a runtime directory for another version of the same code, optionally
broken on purpose through runtime.json's `simulate` switch (see resources/runtime/app/main.py):
`crash-at-start`, `hang-at-start`, `crash-after-ready:SECONDS`, `exit-clean-at-start`.
"""

from __future__ import annotations

import json
import posixpath
import shutil
from pathlib import Path

from desktop.core.manifest import MANIFEST_NAME
from desktop.core.paths import resources_dir

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def bundled_runtime_dir() -> Path:
    """The runtime shipped inside the app (`resources/runtime`)."""
    return resources_dir() / "runtime"


def derive_runtime(
    dest: Path,
    version: str,
    *,
    simulate: str | None = None,
    source: Path | None = None,
    requires_shell: str | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Copy a runtime directory to `dest` as `version` and return `dest`.

    `source` defaults to the bundled runtime. `dest` must not exist; its parents are created.
    `__pycache__` and byte-code are left out, and so are the native dependencies the manifest
    names (the stager copies those in from the shell's resources). runtime.json gets `version`,
    and `simulate` / `requires_shell` when given. `version` is written as is, unvalidated, so
    tests can make invalid releases. `extra_files` maps relative POSIX paths to contents and is
    written last: it may add files or replace any file, runtime.json included.
    """
    source = bundled_runtime_dir() if source is None else source
    manifest_path = source / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path} does not hold a JSON object")
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} already exists")

    native = {name for name in manifest.get("native", []) if isinstance(name, str)}

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(_IGNORED(directory, names))
        if Path(directory) == source:
            skipped |= native & set(names)
        return skipped

    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, symlinks=True, ignore=ignore)

    manifest["version"] = version
    if simulate is not None:
        manifest["simulate"] = simulate
    if requires_shell is not None:
        manifest["requires_shell"] = requires_shell
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    for rel, content in (extra_files or {}).items():
        target = dest / _checked_relative(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return dest


def _checked_relative(rel: str) -> str:
    normalized = posixpath.normpath(rel)
    if (not rel or "\\" in rel or "\x00" in rel or rel.startswith("/")
            or normalized == "." or normalized.split("/")[0] == ".."):
        raise ValueError(f"extra file path {rel!r} must be relative and inside the runtime")
    return normalized


def resources_with_broken_bundle(source: Path, dest: Path, simulate: str) -> Path:
    """A copy of the shell's resources whose bundled runtime misbehaves as `simulate` says."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(dest / "runtime")
    manifest = json.loads((source / "runtime" / "runtime.json").read_text())
    derive_runtime(dest / "runtime", str(manifest["version"]), simulate=simulate, source=source / "runtime")
    return dest
