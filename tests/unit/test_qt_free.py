"""desktop.core and desktop.cli never import Qt (the UI is a thin layer on top)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import desktop.core


def test_core_and_cli_import_without_pyside6() -> None:
    modules = ["desktop.cli", "desktop.demo", "desktop.devtools"] + [
        info.name for info in pkgutil.walk_packages(desktop.core.__path__, "desktop.core.")]
    assert len(modules) > 15
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "qt = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6'))\n"
        "print(len(sys.modules)); assert not qt, qt\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_the_check_itself_can_fail() -> None:
    code = "import sys, desktop.ui.workers; assert not [m for m in sys.modules if m.startswith('PySide6')]"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0


def test_status_imports_only_what_it_uses(tmp_path: object) -> None:
    code = (
        "import sys, desktop.cli\n"
        f"assert desktop.cli.main(['status', '--json', '--data-dir', {str(tmp_path)!r} + '/data']) == 0\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'py7zr', 'tuf', 'securesystemslib',"
        " 'cryptography', 'PySide6'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
