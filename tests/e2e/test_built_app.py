"""The built, frozen app (installer/build.py -> dist/desktop-shell/desktop), driven end to end.

The session fixture runs the one build command (a no-op when the inputs did not change; a cold
build takes one to a few minutes). Releases are published with the repository's own code to a
feed served on 127.0.0.1; the app only ever sees temporary data directories.

    .venv/bin/pytest -m e2e tests/e2e -q -s
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.built_app import (
    APP,
    APP_DIR,
    BUILD_SCRIPT,
    DIST,
    REPO_ROOT,
    SHELL_VERSION,
    accent_pixels,
    app_env,
    run_app,
    run_json,
)
from tests.support.feed import Feed
from tests.support.server import LoopbackServer

# The first test to use `built_app` pays for a cold build (setup time counts against the timeout).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux build is tested here")]

# Left out of the frozen app on purpose (installer/desktop.spec), or with side effects on import.
STDLIB_NOT_BUNDLED = {
    "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "test", "ensurepip", "lib2to3", "distutils",
    "readline", "_gdbm", "_aix_support", "antigravity", "this", "__hello__", "__phello__",
}


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    work = tmp_path_factory.mktemp("e2e-feed")
    with LoopbackServer() as server:
        yield Feed(work / "feed", server, work / "work")


def test_version_and_artefacts(built_app: Path) -> None:
    assert run_app("--version").stdout.strip() == f"desktop {SHELL_VERSION}"
    archives = list(DIST.glob(f"desktop-shell-{SHELL_VERSION}-linux-*.tar.gz"))
    assert len(archives) == 1 and archives[0].stat().st_size > 10_000_000
    assert len(list(DIST.glob(f"desktop-shell_{SHELL_VERSION}_*.deb"))) == 1
    assert not (DIST / "desktop").exists(), "nothing called desktop/ (it would sit next to ~/Desktop)"
    entry = (APP_DIR / "desktop-shell.desktop").read_text()
    assert "[Desktop Entry]" in entry and "Icon=desktop-shell" in entry
    assert (APP_DIR / "desktop-shell.svg").is_file()
    info = json.loads((APP_DIR / "_internal" / "build-info.json").read_text())
    assert (info["version"], info["platform"], info["executable"]) == (SHELL_VERSION, "linux-x86_64", "desktop")
    bundled = APP_DIR / "_internal" / "resources"
    for part in ("runtime/runtime.json", "runtime/app/main.py", "native/textstats/libtextstats.so", "config.json"):
        assert (bundled / part).is_file(), part
    assert ((bundled / "native/textstats/libtextstats.so").read_bytes()
            == (REPO_ROOT / "resources/native/textstats/libtextstats.so").read_bytes())


def test_archive_unpacks_and_runs_anywhere(built_app: Path, tmp_path: Path) -> None:
    import tarfile

    (archive,) = DIST.glob(f"desktop-shell-{SHELL_VERSION}-linux-*.tar.gz")
    top = archive.name[: -len(".tar.gz")]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(name == top or name.startswith(f"{top}/") for name in names)
        assert {f"{top}/install.sh", f"{top}/uninstall.sh", f"{top}/launcher.sh", f"{top}/shell/desktop"} <= set(names)
        tar.extractall(tmp_path / "opt", filter="tar")
    app = tmp_path / "opt" / top / "shell" / "desktop"
    result = subprocess.run([str(app), "launch", "--until-ready", "--json", "--data-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=90, env=app_env(), check=False)
    assert result.returncode == 0, result.stderr
    launched = json.loads(result.stdout)
    assert (launched["source"], launched["version"], launched["ready"]) == ("bundled", SHELL_VERSION, True)
    log = (tmp_path / "data" / "logs" / "runtime.log").read_text()
    assert f"{app} --run-runtime {app.parent}/_internal/resources/runtime/app/main.py" in log


def test_build_is_cached(built_app: Path) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BUILD_SCRIPT)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
    print(f"\ne2e: cached build check took {elapsed:.1f} s")


def test_data_dir_comes_from_platformdirs_not_the_install_dir(built_app: Path, tmp_path: Path) -> None:
    env = app_env(HOME=str(tmp_path / "home"))
    env.pop("XDG_DATA_HOME", None)
    status = run_json("status", env=env)
    assert status["data_dir"] == str(tmp_path / "home" / ".local" / "share" / "desktop-shell")
    assert status["source"] == "bundled" and status["version"] == SHELL_VERSION
    assert not str(status["data_dir"]).startswith(str(APP_DIR))


def test_bundled_update_and_fallback(built_app: Path, feed: Feed, tmp_path: Path) -> None:
    data = tmp_path / "data"
    registry = ["--registry", feed.url, "--registry-kind", "feed",
                "--public-key", str(feed.key.public_path), "--data-dir", str(data)]

    # a. The frozen interpreter runs the bundled runtime through `desktop --run-runtime`.
    launched = run_json("launch", "--until-ready", "--data-dir", str(data))
    assert (launched["source"], launched["version"], launched["ready"]) == ("bundled", SHELL_VERSION, True)
    assert str(launched["url"]).startswith("http://127.0.0.1:")
    runtime_log = (data / "logs" / "runtime.log").read_text()
    assert f"{APP} --run-runtime {APP_DIR}/_internal/resources/runtime/app/main.py" in runtime_log

    # b. A release on the feed is staged, and launches.
    feed.publish("1.1.0")
    updated = run_json("update", *registry, timeout=180)
    assert (updated["outcome"], updated["version"]) == ("staged", "1.1.0")
    launched = run_json("launch", "--until-ready", "--data-dir", str(data))
    assert (launched["source"], launched["version"]) == ("staged", "1.1.0")

    # c. A release that crashes at start is marked bad; the shell falls back to 1.1.0.
    feed.publish("1.2.0", simulate="crash-at-start")
    updated = run_json("update", *registry, timeout=180)
    assert (updated["outcome"], updated["version"]) == ("staged", "1.2.0")
    launched = run_json("launch", "--until-ready", "--data-dir", str(data))
    assert (launched["source"], launched["version"]) == ("staged", "1.1.0")
    fallbacks = launched["fallbacks"]
    assert isinstance(fallbacks, list) and fallbacks[0]["version"] == "1.2.0"
    assert "exit code 17" in fallbacks[0]["reason"]
    bad = run_json("bad", "list", "--data-dir", str(data))["bad"]
    assert isinstance(bad, dict) and list(bad) == ["1.2.0"]
    # The broken version is not staged again.
    again = run_json("update", *registry, timeout=180)
    assert again["outcome"] in ("bad-version", "up-to-date")


def test_gui_runs_offscreen_and_shows_the_runtime(built_app: Path, feed: Feed, tmp_path: Path) -> None:
    screenshot = tmp_path / "window.png"
    extra = {"QT_QPA_PLATFORM": "offscreen"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        extra["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    started = time.monotonic()
    result = run_app("run", "--data-dir", str(tmp_path / "gui-data"), "--exit-after", "6",
                     "--screenshot", str(screenshot), "--registry", feed.url, "--registry-kind", "feed",
                     "--public-key", str(feed.key.public_path), env=app_env(**extra), timeout=120, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert "--run-runtime" in (tmp_path / "gui-data" / "logs" / "runtime.log").read_text()
    accent = accent_pixels(screenshot)
    print(f"\ne2e: GUI ran {elapsed:.1f} s, screenshot {len(data)} bytes, {accent} sampled accent pixels")
    assert accent > 300, "the window does not show the runtime's page (QtWebEngine did not render it)"


RUNTIME_MODE_SCRIPT = r'''
import json, os, signal, sys, time, warnings
warnings.simplefilter("ignore")
import helper_mod  # next to this script: sys.path[0] is the script's directory
mode = sys.argv[1]
if mode == "report":
    names = json.loads(open(sys.argv[2]).read())
    failed = {}
    for name in names:
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001
            failed[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "helper": helper_mod.VALUE,
                      "failed": failed, "frozen": bool(getattr(sys, "frozen", False)),
                      "sigint": repr(signal.getsignal(signal.SIGINT)),
                      "sigterm": repr(signal.getsignal(signal.SIGTERM)),
                      "ld_library_path": os.environ.get("LD_LIBRARY_PATH")}), flush=True)
    sys.exit(int(sys.argv[3]))
if mode == "wait":
    print("waiting", flush=True)
    time.sleep(60)
if mode == "raise":
    raise ValueError("boom")
'''


def _interpreters() -> dict[str, list[str]]:
    return {"python": [sys.executable], "frozen": [str(APP), "--run-runtime"]}


def test_runtime_mode_is_like_python(built_app: Path, tmp_path: Path) -> None:
    scripts = tmp_path / "rt"
    scripts.mkdir()
    (scripts / "main.py").write_text(RUNTIME_MODE_SCRIPT)
    (scripts / "helper_mod.py").write_text("VALUE = 42\n")
    names = sorted(n for n in sys.stdlib_module_names if n not in STDLIB_NOT_BUNDLED)
    (tmp_path / "names.json").write_text(json.dumps(names))
    reports = {}
    env = app_env(LD_LIBRARY_PATH="/nonexistent-e2e")  # the runtime sees the user's, not the bundle's
    for label, interpreter in _interpreters().items():
        result = subprocess.run([*interpreter, str(scripts / "main.py"), "report", str(tmp_path / "names.json"), "7"],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False)
        assert result.returncode == 7, f"{label}: {result.returncode} {result.stderr[-3000:]}"
        reports[label] = json.loads(result.stdout.strip().splitlines()[-1])
    python, frozen = reports["python"], reports["frozen"]
    assert frozen["frozen"] and not python["frozen"]
    for key in ("argv", "path0", "name", "helper", "sigint", "sigterm", "ld_library_path"):
        assert frozen[key] == python[key], key
    assert frozen["argv"][0] == str(scripts / "main.py") and frozen["name"] == "__main__"
    missing = {name: why for name, why in frozen["failed"].items() if name not in python["failed"]}
    assert not missing, f"stdlib modules python imports but the frozen app cannot: {missing}"
    print(f"\ne2e: runtime mode imported {len(names) - len(frozen['failed'])} of {len(names)} stdlib modules")


def test_runtime_mode_reports_an_uncaught_exception_like_python(built_app: Path, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(RUNTIME_MODE_SCRIPT)
    (tmp_path / "helper_mod.py").write_text("VALUE = 1\n")
    results = {label: subprocess.run([*interpreter, str(tmp_path / "main.py"), "raise"], capture_output=True,
                                     text=True, timeout=60, env=app_env(), check=False)
               for label, interpreter in _interpreters().items()}
    assert results["frozen"].returncode == results["python"].returncode == 1
    assert results["frozen"].stderr == results["python"].stderr
    assert "ValueError: boom" in results["frozen"].stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_runtime_mode_handles_signals_like_python(built_app: Path, tmp_path: Path, signum: int) -> None:
    (tmp_path / "main.py").write_text(RUNTIME_MODE_SCRIPT)
    (tmp_path / "helper_mod.py").write_text("VALUE = 1\n")
    codes = {}
    for label, interpreter in _interpreters().items():
        proc = subprocess.Popen([*interpreter, str(tmp_path / "main.py"), "wait"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=app_env())
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "waiting"
            proc.send_signal(signum)
            codes[label] = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    assert codes["frozen"] == codes["python"] == -signum, codes


def test_time_to_runtime_ready(built_app: Path, tmp_path: Path) -> None:
    """Median wall time of `desktop launch --until-ready --json` (process start to ready line, runtime stopped)."""
    data = tmp_path / "data"

    def median_of_5(command: list[str]) -> tuple[float, list[float]]:
        times = []
        for _ in range(5):
            started = time.monotonic()
            result = subprocess.run(command, capture_output=True, text=True, timeout=90, env=app_env(), check=False)
            times.append(time.monotonic() - started)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["ready"] is True
        return statistics.median(times), times

    frozen_cmd = [str(APP), "launch", "--until-ready", "--json", "--data-dir", str(data)]
    frozen, frozen_all = median_of_5(frozen_cmd)
    source, source_all = median_of_5([sys.executable, "-m", "desktop", "launch", "--until-ready", "--json",
                                      "--data-dir", str(tmp_path / "data-src")])
    print(f"\ne2e: built app time to runtime-ready, median of 5: {frozen:.3f} s "
          f"({', '.join(f'{t:.3f}' for t in frozen_all)}) for `dist/desktop-shell/desktop launch --until-ready --json "
          f"--data-dir D`; from source (python -m desktop): {source:.3f} s "
          f"({', '.join(f'{t:.3f}' for t in source_all)})")
    assert frozen < 15
