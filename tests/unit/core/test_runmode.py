"""Runtime mode (`desktop --run-runtime ENTRY ...`) behaves like `python ENTRY ...`, also unfrozen."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.core import runmode
from desktop.core.process import python_command

SCRIPT = """
import json, signal, sys, time
import sibling
if sys.argv[1] == "raise":
    raise ValueError("boom")
if sys.argv[1] == "wait":
    print("waiting", flush=True)
    time.sleep(60)
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "sibling": sibling.VALUE}))
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt" / "main.py").write_text(SCRIPT)
    (tmp_path / "rt" / "sibling.py").write_text("VALUE = 'here'\n")
    return tmp_path / "rt" / "main.py"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_matches_python(entry: Path, tmp_path: Path) -> None:
    as_python = run([sys.executable, str(entry), "report", "7", "x y"], tmp_path)
    as_runtime = run([sys.executable, "-m", "desktop", "--run-runtime", str(entry), "report", "7", "x y"], tmp_path)
    assert as_python.returncode == as_runtime.returncode == 7, as_runtime.stderr
    python, runtime = json.loads(as_python.stdout), json.loads(as_runtime.stdout)
    assert runtime == python
    assert runtime["argv"] == [str(entry), "report", "7", "x y"] and runtime["name"] == "__main__"
    assert runtime["path0"] == str(entry.parent)


def test_uncaught_exception_is_reported_like_python(entry: Path, tmp_path: Path) -> None:
    as_python = run([sys.executable, str(entry), "raise"], tmp_path)
    as_runtime = run([sys.executable, "-m", "desktop", "--run-runtime", str(entry), "raise"], tmp_path)
    assert as_python.returncode == as_runtime.returncode == 1
    assert as_runtime.stderr == as_python.stderr
    assert "runpy" not in as_runtime.stderr and "ValueError: boom" in as_runtime.stderr


def test_missing_entry_exits_2(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "desktop", "--run-runtime", str(tmp_path / "nope.py")], tmp_path)
    assert result.returncode == 2 and "can't open file" in result.stderr
    assert run([sys.executable, "-m", "desktop", "--run-runtime"], tmp_path).returncode == 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_unhandled_sigint_ends_the_process_by_sigint(entry: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "--run-runtime", str(entry), "wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == -signal.SIGINT
        assert proc.stderr is not None and "KeyboardInterrupt" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_python_command_unfrozen_is_this_interpreter() -> None:
    assert python_command() == [sys.executable]


def test_python_command_frozen_reinvokes_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert python_command() == [sys.executable, runmode.RUNTIME_MODE_FLAG]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux bootloader's variable")
@pytest.mark.parametrize(("source", "expected"), [
    ({"LD_LIBRARY_PATH": "/app/_internal:/usr/local/lib", "LD_LIBRARY_PATH_ORIG": "/usr/local/lib"},
     "/usr/local/lib"),
    ({"LD_LIBRARY_PATH": "/app/_internal"}, None),
])
def test_restore_library_path(source: dict[str, str], expected: str | None) -> None:
    env = dict(source)
    runmode.restore_library_path(env, source)
    assert env.get("LD_LIBRARY_PATH") == expected and "LD_LIBRARY_PATH_ORIG" not in env
