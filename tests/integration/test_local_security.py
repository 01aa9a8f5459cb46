"""Trust on the npm path, secrets in messages, and what the shell writes to disk."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from desktop.core.config import AppConfig
from desktop.core.results import UpdateOutcome
from tests.integration.conftest import PACKAGE, run_cli
from tests.support.server import LoopbackServer
from tests.support.shells import update

Publish = Callable[..., Path]
Config = Callable[..., AppConfig]


def test_npm_version_with_only_a_sha1_shasum_is_refused(server: LoopbackServer, build_release: Publish,
                                                          npm_config: Config) -> None:
    server.publish_npm_package(PACKAGE, "1.1.0", build_release("1.1.0"))
    doc = server.npm_document(PACKAGE)
    del doc["versions"]["1.1.0"]["dist"]["integrity"]
    server.set_npm_document(PACKAGE, doc)
    config = npm_config()
    report = update(config)
    assert report.outcome is UpdateOutcome.FAILED and "sha512" in str(report.error)
    assert not config.data.versions_dir.exists() or not any(config.data.versions_dir.iterdir())
    assert not [r for r in server.requests if r.path.endswith(".tgz")], "the tarball was never fetched"


def test_npm_registry_cannot_swap_the_bytes_of_a_version_it_already_showed(
        server: LoopbackServer, build_release: Publish, publish: Publish, npm_config: Config) -> None:
    publish("1.1.0")
    config = npm_config()
    assert update(config).outcome is UpdateOutcome.STAGED
    publish("1.2.0")
    config_check = run_cli("check", "--json", "--data-dir", str(config.data.root), "--registry",
                           config.registry_url or "", "--registry-kind", "npm")
    assert json.loads(config_check.stdout)["available"] == "1.2.0"
    # The registry (or someone in it) now serves other bytes under 1.2.0.
    server.publish_npm_package(PACKAGE, "1.2.0", build_release("1.2.0", extra_files={"app/evil.py": b"x"}))
    report = update(config)
    assert report.outcome is UpdateOutcome.FAILED and "different bytes" in str(report.error)
    assert not (config.data.versions_dir / "1.2.0").exists()


def test_credentials_in_the_registry_url_never_reach_output_logs_or_state(
        server: LoopbackServer, publish: Publish, data_dir: Path) -> None:
    publish("1.1.0")
    secret = "s3cret-t0ken"
    url = server.url.replace("http://", f"http://alice:{secret}@") + f"/{PACKAGE}"
    base = ["--data-dir", str(data_dir), "--registry", url, "--registry-kind", "npm"]
    outputs = [run_cli("update", *base, "--json", "-v"), run_cli("status", *base, "--json"),
               run_cli("status", *base), run_cli("check", *base, "-v")]
    server.fault(f"/{PACKAGE}", "status", code=503, times=None)
    outputs += [run_cli("update", *base, "--json", "-v"), run_cli("status", *base)]
    server.clear_faults()
    server.fault(f"/{PACKAGE}", "stall", seconds=10)
    outputs.append(run_cli("update", *base, env={"DESKTOP_NET_READ_TIMEOUT": "1"}))
    assert json.loads(outputs[0].stdout)["outcome"] == "staged", outputs[0].stderr
    assert "***@" in outputs[2].stdout, "status still names the registry, without its secret"
    for result in outputs:
        assert secret not in result.stdout and secret not in result.stderr
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"{path} holds the secret"


def test_everything_the_shell_writes_is_private(server: LoopbackServer, publish: Publish, data_dir: Path) -> None:
    publish("1.1.0")
    base = ["--data-dir", str(data_dir), "--registry", f"{server.url}/{PACKAGE}", "--registry-kind", "npm"]
    assert run_cli("update", *base).returncode == 0
    assert run_cli("launch", "--until-ready", "--data-dir", str(data_dir)).returncode == 0
    for path in [data_dir, *data_dir.rglob("*")]:
        if path.is_symlink() or "versions" in path.relative_to(data_dir.parent).parts[1:2]:
            continue
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is {mode:o}"
    assert (data_dir / "logs" / "desktop.log").exists() or (data_dir / "logs" / "runtime.log").exists()
    assert os.stat(data_dir).st_mode & 0o777 == 0o700
