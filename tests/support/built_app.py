"""The built, frozen app for end-to-end tests: where it is, how to run it, and what its window shows."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "installer" / "build.py"
DIST = REPO_ROOT / "dist"
APP_DIR = DIST / "desktop-shell"
APP = APP_DIR / "desktop"
SHELL_VERSION = "1.0.0"


def app_env(**extra: str) -> dict[str, str]:
    """The test environment without anything that would point the app elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DESKTOP_DATA_DIR", "DESKTOP_RESOURCES", "DESKTOP_NO_WEBVIEW", "PYTHONPATH",
                        "DESKTOP_INSTALL_ROOT", "DESKTOP_HEALTH_MARK", "DESKTOP_LAUNCHER", "DESKTOP_POLICY_FILE")}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env.update(extra)
    return env


def run_app(*args: str, timeout: float = 90, env: dict[str, str] | None = None, check: bool = True,
            program: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*(program or [str(APP)]), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or app_env(), check=False)
    if check and result.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` exited {result.returncode}\n"
                    f"stdout: {result.stdout}\nstderr: {result.stderr}", pytrace=False)
    return result


def run_json(*args: str, **kwargs: object) -> dict[str, object]:
    result = run_app(*args, "--json", **kwargs)  # type: ignore[arg-type]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"no JSON on stdout; stderr: {result.stderr}"
    data = json.loads(lines[-1])
    assert isinstance(data, dict)
    return data


def accent_pixels(png: Path) -> int:
    """Pixels in the Notes page's accent colour (its 'Add note' button): web content was drawn."""
    from PySide6.QtGui import QImage  # noqa: TID251  (tests may use Qt; no QApplication needed)

    image = QImage(str(png))
    assert not image.isNull(), f"{png} is not a readable image"
    accents = [(0x34, 0x57, 0xD5), (0x7B, 0x96, 0xFF)]  # light and dark theme
    count = 0
    for y in range(0, image.height(), 2):
        for x in range(0, image.width(), 2):
            colour = image.pixelColor(x, y)
            rgb = (colour.red(), colour.green(), colour.blue())
            if any(all(abs(a - b) <= 24 for a, b in zip(rgb, accent, strict=True)) for accent in accents):
                count += 1
    return count
