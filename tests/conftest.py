"""Shared test set-up: Qt runs offscreen, and the bundled native dependency is built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# No test may reach the feed URL shipped in resources/config.json: anything that does not name
# its own registry gets a closed loopback port (offline).
os.environ["DESKTOP_REGISTRY"] = "http://127.0.0.1:9/feed/"
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

REPO_ROOT = Path(__file__).resolve().parents[1]
NATIVE_BUILD_SCRIPT = REPO_ROOT / "resources" / "native-src" / "build.py"


@pytest.fixture(scope="session", autouse=True)
def native_textstats_built() -> Path:
    """Build resources/native/textstats (a no-op when it is up to date); its directory."""
    result = subprocess.run(
        [sys.executable, str(NATIVE_BUILD_SCRIPT), "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building the native dependency failed: {(result.stderr or result.stdout).strip()}",
                    pytrace=False)
    return REPO_ROOT / "resources" / "native" / "textstats"
