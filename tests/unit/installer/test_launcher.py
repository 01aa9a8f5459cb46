"""The launcher (installer/launcher.sh) run by /bin/sh against fake shells that exit in various ways.

A fake shell that reports healthy runs the product's own report_healthy, so the bad marks and
pointer moves checked here are the real ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from desktop.core.badlist import BadVersions
from desktop.core.pointer import Pointer, read_pointer, write_pointer
from tests.support.installs import HEALTHY, add_shell, make_root, source_env

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX sh")


def launch(root: Path, *args: str, stdin: str = "", timeout: float = 60,
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", 'exec "$0" "$@"', str(root / "desktop-shell"), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=source_env(**env), check=False)


def point(root: Path, version: str, *, known_good: bool = False, lkg: str | None = None) -> None:
    from packaging.version import Version

    write_pointer(root / "current.json", Pointer(Version(version), known_good=known_good,
                                                  last_known_good=Version(lkg) if lkg else None))


def ran(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ran ")]


def body(version: str, then: str = f"{HEALTHY}\nexit 0") -> str:
    return f'echo "ran {version} $*"\n{then}'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "home dir" / "app", body=body("1.0.0"))


def test_without_a_pointer_the_installed_shell_runs_with_the_arguments_stdin_and_exit_code(root: Path) -> None:
    add_shell(root, "1.0.0-unused", body("x"))  # not named by anything: never started
    (root / "shells" / "1.0.0" / "desktop").write_text(
        "#!/bin/sh\n" + body("1.0.0", f'read line; echo "stdin: $line"\n{HEALTHY}\nexit 7'))
    result = launch(root, "status", "--json", "two words", stdin="hello\n")
    assert result.returncode == 7
    assert result.stdout.splitlines() == ["ran 1.0.0 status --json two words", "stdin: hello"]
    assert not (root / "bad-versions.json").exists()


def test_the_pointers_shell_runs_and_a_healthy_exit_is_never_blamed(root: Path) -> None:
    add_shell(root, "1.1.0", body("1.1.0", f"{HEALTHY}\nexit 3"))
    point(root, "1.1.0")
    result = launch(root, "update")
    assert (result.returncode, ran(result)) == (3, ["1.1.0"])
    assert not (root / "bad-versions.json").exists()
    assert read_pointer(root / "current.json").version.public == "1.1.0"  # type: ignore[union-attr]


def test_a_shell_that_crashes_before_it_is_healthy_is_marked_bad_and_the_fallback_runs(root: Path) -> None:
    add_shell(root, "1.1.0", body("1.1.0"))
    add_shell(root, "1.2.0", 'echo "Failed to load Python shared library" >&2\nexit 255')
    point(root, "1.2.0", lkg="1.1.0")
    result = launch(root, "launch", "--until-ready")
    assert result.returncode == 0, result.stderr
    assert ran(result) == ["1.1.0"]
    assert "Failed to load Python shared library" in result.stderr  # the user still sees the shell's stderr
    assert "version 1.2.0 of the app failed to start" in result.stderr
    bad = BadVersions(root / "bad-versions.json").load()
    entry = bad.entries[next(iter(bad.entries))]
    assert [str(v) for v in bad.entries] == ["1.2.0"]
    assert (entry.exit_code, entry.reason) == (255, "exited with code 255 before it was ready")
    assert entry.stderr_tail == ("Failed to load Python shared library",)
    pointer = read_pointer(root / "current.json")
    assert pointer is not None and (str(pointer.version), pointer.known_good) == ("1.1.0", True)
    # The next start goes straight to 1.1.0: nothing is tried twice.
    again = launch(root)
    assert ran(again) == ["1.1.0"] and "failed to start" not in again.stderr


def test_a_fallback_that_crashes_too_ends_at_the_installed_shell_which_is_never_marked(root: Path) -> None:
    add_shell(root, "1.1.0", "exit 1")
    add_shell(root, "1.2.0", "kill -SEGV $$")
    point(root, "1.2.0", lkg="1.1.0")
    result = launch(root, "run")
    assert ran(result) == ["1.0.0"] and result.returncode == 0
    bad = BadVersions(root / "bad-versions.json").load().entries
    assert {str(v): e.reason for v, e in bad.items()} == {
        "1.2.0": "killed by SIGSEGV before it was ready", "1.1.0": "exited with code 1 before it was ready"}
    assert read_pointer(root / "current.json") is None


def test_the_installed_shell_crashing_is_reported_but_never_marked(root: Path) -> None:
    (root / "shells" / "1.0.0" / "desktop").write_text("#!/bin/sh\necho broken >&2\nexit 9\n")
    result = launch(root)
    assert result.returncode == 9 and "broken" in result.stderr
    assert not (root / "bad-versions.json").exists()


def test_when_every_shell_fails_the_machine_is_to_blame_and_nothing_is_marked(root: Path) -> None:
    # What a missing display or system library does: Qt aborts in every shell alike.
    no_display = 'echo "qt.qpa.xcb: could not connect to display" >&2\nkill -ABRT $$'
    (root / "shells" / "1.0.0" / "desktop").write_text(f"#!/bin/sh\n{no_display}\n")
    add_shell(root, "1.1.0", no_display)
    add_shell(root, "1.2.0", no_display)
    point(root, "1.2.0", lkg="1.1.0")
    result = launch(root)
    assert result.returncode == 134
    assert "nothing was marked bad: the cause looks like this computer's" in result.stderr
    assert not (root / "bad-versions.json").exists()
    pointer = read_pointer(root / "current.json")
    assert pointer is not None and str(pointer.version) == "1.2.0"  # tried again once the machine is fixed
    assert not [p.name for p in (root / "health").iterdir() if p.name != "launcher.log"], "nothing left behind"


def test_the_fallback_is_the_last_known_good_the_pointer_had_when_the_launch_began(root: Path) -> None:
    """A stage moving the pointer while the new shell crashes does not choose the fallback."""
    add_shell(root, "1.1.0", body("1.1.0"))
    add_shell(root, "1.3.0", body("1.3.0"))
    add_shell(root, "1.2.0", 'cat > "$DESKTOP_INSTALL_ROOT/current.json" <<EOF\n'
                             '{\n  "version": "1.3.0",\n  "last_known_good": "1.1.0"\n}\nEOF\nexit 1')
    point(root, "1.2.0", lkg="1.1.0")
    result = launch(root)
    assert ran(result) == ["1.1.0"]
    assert [str(v) for v in BadVersions(root / "bad-versions.json").load().entries] == ["1.2.0"]
    # The pointer had moved on: it is left alone (it no longer names the failed shell).
    assert str(read_pointer(root / "current.json").version) == "1.3.0"  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["exit 0", "kill -TERM $$", "kill -HUP $$", "exit 130"])
def test_a_clean_exit_or_a_stop_before_the_mark_is_not_a_crash(root: Path, how: str) -> None:
    add_shell(root, "1.1.0", body("1.1.0", how))
    point(root, "1.1.0")
    result = launch(root, "--version")
    assert ran(result) == ["1.1.0"]
    assert not (root / "bad-versions.json").exists()
    assert str(read_pointer(root / "current.json").version) == "1.1.0"  # type: ignore[union-attr]


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(root / "desktop-shell"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=source_env(), start_new_session=True)


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


STARTING = """echo "ran $(basename "$(dirname "$0")") $*"
echo $$ > "$DESKTOP_INSTALL_ROOT/child.pid"
trap 'echo "got TERM"; exit 143' TERM
trap 'echo "got HUP"; exit 129' HUP
while :; do sleep 0.05; done
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_launcher_during_the_start_is_forwarded_and_is_not_a_crash(root: Path, signum: int) -> None:
    add_shell(root, "1.1.0", STARTING)
    point(root, "1.1.0")
    proc = _start(root, "run")
    try:
        _wait_for(root / "child.pid")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(signum).name[3:]
    assert f"got {name}" in out, (out, err)
    assert proc.returncode == 128 + signum
    assert not (root / "bad-versions.json").exists()
    assert str(read_pointer(root / "current.json").version) == "1.1.0"  # type: ignore[union-attr]


CTRL_C = f"""import os, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
from desktop.core.install.health import take_from_environment
take_from_environment()  # what the real shell does first: SIGINT works again under the launcher
open(os.path.join(os.environ["DESKTOP_INSTALL_ROOT"], "child.pid"), "w").write(str(os.getpid()))
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_in_a_terminal_stops_the_starting_shell_and_is_not_a_crash(root: Path) -> None:
    import sys

    add_shell(root, "1.1.0", f"exec {sys.executable} \"$(dirname \"$0\")/ctrl_c.py\"")
    (root / "shells" / "1.1.0" / "ctrl_c.py").write_text(CTRL_C)
    point(root, "1.1.0")
    proc = _start(root)
    try:
        _wait_for(root / "child.pid")
        os.killpg(proc.pid, signal.SIGINT)  # a terminal signals the whole foreground process group
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted" in out, (out, err)
    assert proc.returncode == 130
    assert not (root / "bad-versions.json").exists()


RESTARTER = f"""echo "ran 1.1.0 $*"
{HEALTHY}
cat > "$DESKTOP_INSTALL_ROOT/current.json" <<EOF
{{
  "known_good": false,
  "last_known_good": "1.1.0",
  "updated_at": 1.0,
  "version": "1.3.0"
}}
EOF
exit 85
"""


def test_restart_to_update_starts_the_pointers_new_shell_with_the_same_arguments(root: Path) -> None:
    add_shell(root, "1.1.0", RESTARTER)
    add_shell(root, "1.3.0", body("1.3.0"))
    point(root, "1.1.0", known_good=True)
    result = launch(root, "run", "--exit-after", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ran 1.1.0 run --exit-after 1", "ran 1.3.0 run --exit-after 1"]


def test_restart_is_bounded(root: Path) -> None:
    add_shell(root, "1.1.0", body("1.1.0", f"{HEALTHY}\nexit 85"))
    point(root, "1.1.0")
    result = launch(root)
    assert ran(result) == ["1.1.0"] * 6 and result.returncode == 85


def test_a_bad_pointer_is_not_started_the_last_known_good_is(root: Path) -> None:
    add_shell(root, "1.1.0", body("1.1.0"))
    add_shell(root, "1.2.0", body("1.2.0"))
    point(root, "1.2.0", lkg="1.1.0")
    BadVersions(root / "bad-versions.json").mark(__import__("packaging.version").version.Version("1.2.0"), "x")
    assert ran(launch(root)) == ["1.1.0"]


@pytest.mark.parametrize("pointer", [
    '{\n  "version": "../../../../bin"\n}\n',
    '{\n  "version": "1.9.0"\n}\n',  # no such directory
    '{\n  "version": ".."\n}\n',
    "not json at all",
])
def test_a_pointer_naming_nothing_startable_falls_back_to_the_installed_shell(root: Path, pointer: str) -> None:
    (root / "current.json").write_text(pointer)
    result = launch(root)
    assert ran(result) == ["1.0.0"] and result.returncode == 0


def test_a_shell_symlinked_into_shells_is_not_started(root: Path, tmp_path: Path) -> None:
    elsewhere = add_shell(tmp_path, "1.5.0", body("1.5.0")).parent / "1.5.0"
    (root / "shells" / "1.5.0").symlink_to(elsewhere)
    point(root, "1.5.0")
    assert ran(launch(root)) == ["1.0.0"]


def test_started_through_a_symlink_it_finds_its_install_root(root: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "desktop-shell").symlink_to(root / "desktop-shell")
    result = subprocess.run([str(bin_dir / "desktop-shell"), "x"], capture_output=True, text=True, timeout=30,
                            env=source_env(), check=False)
    assert result.stdout.splitlines() == ["ran 1.0.0 x"]


def test_a_broken_install_is_reported_in_one_line(root: Path) -> None:
    (root / "installed").write_text("../evil\n")
    result = launch(root)
    assert result.returncode == 1
    assert result.stderr.strip() == f"desktop-shell: the app is not installed properly in {root}; run install.sh again"


def test_the_shell_gets_the_install_root_the_mark_and_the_launcher_in_its_environment(root: Path) -> None:
    add_shell(root, "1.1.0", 'printf "%s\\n" "$DESKTOP_INSTALL_ROOT" "$DESKTOP_LAUNCHER" "$DESKTOP_HEALTH_MARK"\n'
                             f"{HEALTHY}")
    point(root, "1.1.0")
    result = launch(root)
    install_root, launcher, mark = result.stdout.splitlines()
    assert (install_root, launcher) == (str(root.resolve()), str(root.resolve() / "desktop-shell"))
    assert mark.startswith(str(root.resolve() / "health") + "/") and not Path(mark).exists()
    assert oct((root / "health").stat().st_mode & 0o777) == "0o700"
    log = (root / "health" / "launcher.log").read_text()
    assert "start 1.1.0" in log and "was healthy" in log
