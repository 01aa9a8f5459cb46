"""Fixtures: a real loopback registry serving real runtime archives, and data dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from desktop.core.config import AppConfig, load_config
from desktop.core.pack import pack_directory
from desktop.devtools import derive_runtime
from tests.support.server import LoopbackServer

PACKAGE = "notes-runtime"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def npm_config(server: LoopbackServer, data_dir: Path) -> Callable[..., AppConfig]:
    def make(**overrides: Any) -> AppConfig:
        config = load_config(data_dir=data_dir, registry=f"{server.url}/{PACKAGE}", registry_kind="npm")
        return config.with_overrides(**overrides) if overrides else config
    return make


@pytest.fixture
def build_release(tmp_path: Path) -> Callable[..., Path]:
    """Pack a runtime version (same code as the bundled one) into an archive."""
    counter = iter(range(10_000))

    def build(version: str, *, simulate: str | None = None, fmt: str = "tar.gz",
              requires_shell: str | None = None, extra_files: dict[str, bytes] | None = None,
              manifest_version: str | None = None) -> Path:
        n = next(counter)
        src = derive_runtime(tmp_path / f"src-{n}", manifest_version or version, simulate=simulate,
                             requires_shell=requires_shell, extra_files=extra_files)
        suffix = {"tar.gz": "tgz"}.get(fmt, fmt)
        out = tmp_path / "archives" / f"{PACKAGE}-{version}-{n}.{suffix}"
        out.parent.mkdir(exist_ok=True)
        pack_directory(src, out, fmt)
        return out
    return build


@pytest.fixture
def publish(server: LoopbackServer, build_release: Callable[..., Path]) -> Callable[..., Path]:
    def do(version: str, *, tag: str = "latest", **kwargs: Any) -> Path:
        archive = build_release(version, **kwargs)
        server.publish_npm_package(PACKAGE, version, archive, tag=tag)
        return archive
    return do


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m desktop ARGS` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "desktop", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, check=False)
