"""The one build every end-to-end test shares: `installer/build.py`, a no-op when nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.built_app import APP, BUILD_SCRIPT, REPO_ROOT


@pytest.fixture(scope="session")
def built_app() -> Path:
    """Build (or find up to date) dist/desktop-shell/desktop and its packages with the one build command."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BUILD_SCRIPT)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=1700, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        pytest.fail(f"installer/build.py failed ({result.returncode}):\n{output[-6000:]}", pytrace=False)
    summary = [line for line in output.splitlines() if line.startswith("build:")]
    print(f"\ne2e: installer/build.py took {time.monotonic() - started:.1f} s: " + " | ".join(summary))
    assert APP.is_file() and os.access(APP, os.X_OK)
    return APP
