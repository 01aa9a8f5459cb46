"""Checking, staging and launching from a real npm-compatible registry nobody here wrote: Verdaccio.

Verdaccio is installed once from the npm registry into `.cache/verdaccio` (reused while the pinned
version's install marker is there), started on 127.0.0.1 with no uplinks (it never proxies to the
internet), and fed with the real `npm publish`. The shell is then driven through its real CLI.

What Verdaccio serves differs from tests/support/server.py's loopback registry, and the client
copes with each difference:
- it honours our Accept header with the abbreviated ("corgi") document, which keeps
  `description` and `time` but drops custom version fields such as `runtime` (so the host gate
  comes from the archive's runtime.json only), and `npm publish` writes no `dist.size`;
- its ETag on the document is strong and answers If-None-Match with 304;
- tarballs have no ETag/Last-Modified and Range is ignored (always 200: no resume), and with
  `Accept-Encoding: gzip` a .tgz is gzipped again on the wire (the client asks for identity).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from filelock import FileLock
from packaging.version import Version

from desktop.core.download import Fetcher
from desktop.core.pointer import read_pointer
from desktop.core.registry.npm import ACCEPT, NpmRegistry
from desktop.devtools import derive_runtime
from tests.integration.conftest import PACKAGE, run_cli

VERDACCIO_VERSION = "6.8.0"  # the newest 6.x whose engines still admit Node.js 20
CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "verdaccio"
INSTALLED_MARKER = CACHE_DIR / f".installed-verdaccio-{VERDACCIO_VERSION}"
# Every Verdaccio 6.x depends on verdaccio-audit, which names node-fetch by the dist-tag "cjs";
# a registry (or mirror) that serves only `latest` cannot resolve that, so pin what the tag means.
OVERRIDES = {"verdaccio-audit": {"node-fetch": "2.7.0"}}
GATED = "gated-runtime"
START_DEADLINE_S = 30.0

CONFIG = """\
storage: {storage}
auth:
  htpasswd:
    file: {htpasswd}
    max_users: 10
uplinks: {{}}
packages:
  '**':
    access: $all
    publish: $all
    unpublish: $all
web:
  enable: false
middlewares:
  audit:
    enabled: false
log: {{type: stdout, format: pretty, level: warn}}
"""


def _loopback_env() -> dict[str, str]:
    """The environment with loopback kept off any configured HTTP proxy."""
    env = dict(os.environ)
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key, ""), "127.0.0.1", "localhost"]))
    return env


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Verdaccio:
    url: str  # http://127.0.0.1:PORT/
    npmrc: Path
    npm_cache: Path
    root: Path

    @property
    def package_url(self) -> str:
        return self.url + PACKAGE

    def npm(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real npm client against this registry, with a throwaway user config and cache."""
        npm = shutil.which("npm")
        assert npm is not None
        result = subprocess.run(
            [npm, *args, "--registry", self.url, "--userconfig", str(self.npmrc), "--cache", str(self.npm_cache),
             "--no-update-notifier"],
            cwd=cwd, capture_output=True, text=True, timeout=120, check=False, env=_loopback_env())
        assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{_tail(result.stderr or result.stdout)}"
        return result

    def publish(self, name: str, version: str, **package: Any) -> None:
        src = derive_runtime(self.root / "packages" / f"{name}-{version}", version,
                             requires_shell=package.get("runtime", {}).get("requires_shell"))
        manifest = {"name": name, "version": version, "description": f"{name} {version}",
                    "files": ["runtime.json", "app/"], **package}
        (src / "package.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        self.npm("publish", cwd=src)

    def document(self, name: str, *, accept: str = "application/json") -> tuple[httpx.Headers, dict[str, Any]]:
        with httpx.Client(trust_env=False, timeout=10) as client:
            response = client.get(self.url + name, headers={"Accept": accept})
            response.raise_for_status()
            return response.headers, response.json()


@pytest.fixture(scope="session")
def verdaccio_bin() -> Path:
    """Verdaccio's launcher, installed from the npm registry into the cache once."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm and node (Node.js) are needed to install and run Verdaccio and are not on PATH")
    binary = CACHE_DIR / "node_modules" / ".bin" / "verdaccio"
    CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE_DIR.parent / "verdaccio.lock")):
        if binary.exists() and INSTALLED_MARKER.exists():
            return binary
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
        CACHE_DIR.mkdir()
        (CACHE_DIR / "package.json").write_text(
            json.dumps({"private": True, "overrides": OVERRIDES}, indent=2) + "\n", encoding="utf-8")
        command = [npm, "install", "--prefix", str(CACHE_DIR), "--no-audit", "--no-fund",
                   f"verdaccio@{VERDACCIO_VERSION}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False,
                                    env={**os.environ, "npm_config_update_notifier": "false"})
        except subprocess.TimeoutExpired:
            pytest.fail(f"installing verdaccio@{VERDACCIO_VERSION} timed out: {' '.join(command)}", pytrace=False)
        if result.returncode != 0 or not binary.exists():
            pytest.fail(f"installing verdaccio@{VERDACCIO_VERSION} failed (exit {result.returncode}):\n"
                        f"{_tail(result.stderr or result.stdout)}", pytrace=False)
        INSTALLED_MARKER.write_text(f"{VERDACCIO_VERSION}\n", encoding="utf-8")
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate Verdaccio's whole process group (it was started in a session of its own)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def verdaccio(verdaccio_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verdaccio]:
    """A running Verdaccio on 127.0.0.1 with a user whose token sits in a throwaway npmrc."""
    root = tmp_path_factory.mktemp("verdaccio")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    config = root / "config.yaml"
    config.write_text(CONFIG.format(storage=root / "storage", htpasswd=root / "htpasswd"), encoding="utf-8")
    node = shutil.which("node")
    assert node is not None
    log_path = root / "verdaccio.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([node, str(verdaccio_bin), "--config", str(config), "--listen", f"127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                start_new_session=True, env=_loopback_env())
        try:
            _wait_for_ping(proc, url, log_path)
            listeners = _listeners(port)
            assert listeners is None or listeners == {"0100007F"}, f"verdaccio must bind 127.0.0.1 only: {listeners}"
            yield Verdaccio(url=url, npmrc=_add_user(url, root), npm_cache=root / "npm-cache", root=root)
        finally:
            _stop(proc)


def _wait_for_ping(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"verdaccio exited with {proc.returncode}:\n{_tail(log_path.read_text())}", pytrace=False)
            try:
                if client.get(url + "-/ping").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"verdaccio did not answer {url}-/ping within {START_DEADLINE_S:.0f} s:\n"
                            f"{_tail(log_path.read_text())}", pytrace=False)
            time.sleep(0.1)


def _listeners(port: int) -> set[str] | None:
    """The hex local addresses of the sockets listening on `port` (Linux /proc), None elsewhere."""
    found: set[str] = set()
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _add_user(url: str, root: Path) -> Path:
    """Create a user the CouchDB way npm itself uses and keep its token in a throwaway npmrc."""
    name = "runtime-publisher"
    body = {"_id": f"org.couchdb.user:{name}", "name": name, "password": "not-a-secret-9", "type": "user",
            "roles": [], "date": "2026-01-01T00:00:00.000Z"}
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.put(f"{url}-/user/org.couchdb.user:{name}", json=body)
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    npmrc = root / "npmrc"
    npmrc.write_text(f"registry={url}\n//{url.split('://', 1)[1]}:_authToken={token}\n", encoding="utf-8")
    npmrc.chmod(0o600)
    return npmrc


@pytest.fixture(scope="module")
def published(verdaccio: Verdaccio) -> Verdaccio:
    """notes-runtime 1.1.0 then 1.2.0 (latest moves), beta -> 1.1.0, and a host-gated package."""
    for version in ("1.1.0", "1.2.0"):
        verdaccio.publish(PACKAGE, version)
        assert verdaccio.document(PACKAGE)[1]["dist-tags"]["latest"] == version
    verdaccio.npm("dist-tag", "add", f"{PACKAGE}@1.1.0", "beta")
    verdaccio.publish(GATED, "1.3.0", runtime={"requires_shell": ">=99"})
    return verdaccio


def cli_json(*args: str) -> dict[str, Any]:
    result = run_cli(*args, "--json", env=_loopback_env())
    assert result.returncode == 0, result.stderr
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def test_client_reads_verdaccios_abbreviated_document(published: Verdaccio, tmp_path: Path) -> None:
    headers, doc = published.document(PACKAGE, accept=ACCEPT)
    assert headers["content-type"].startswith("application/vnd.npm.install-v1+json")
    assert doc["dist-tags"] == {"latest": "1.2.0", "beta": "1.1.0"}
    with Fetcher() as fetcher:
        registry = NpmRegistry(published.package_url, fetcher, tmp_path, tmp_path / "seen-integrity.json")
        (release,) = registry.list_releases("latest").releases
        (beta,) = registry.list_releases("beta").releases
        assert registry.list_releases("latest").not_modified, "Verdaccio's ETag makes the re-check a 304"
    assert release.version == Version("1.2.0") and beta.version == Version("1.1.0")
    assert release.url == f"{published.url}{PACKAGE}/-/{PACKAGE}-1.2.0.tgz"
    assert release.integrity is not None and release.integrity.algorithm == "sha512"
    assert release.size is None, "npm publish records no dist.size"
    assert release.notes == f"{PACKAGE} 1.2.0" and release.published


def test_cli_stages_and_launches_from_verdaccio(published: Verdaccio, tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = ["--registry-kind", "npm", "--registry", published.package_url, "--data-dir", str(data)]
    staged = cli_json("update", *base)
    assert (staged["outcome"], staged["version"], staged["delta"]) == ("staged", "1.2.0", False)
    assert staged["bytes_downloaded"] > 1000
    again = cli_json("update", *base)
    assert again["outcome"] == "up-to-date" and again["bytes_downloaded"] < 2048
    checked = cli_json("check", *base)
    assert checked["available"] is None and checked["current"] == "1.2.0" and checked["not_modified"]

    ready = cli_json("launch", "--until-ready", "--data-dir", str(data))
    assert ready["ready"] is True and ready["version"] == "1.2.0" and ready["source"] == "staged"
    pointer = read_pointer(data / "current.json")
    assert pointer is not None and pointer.version == Version("1.2.0") and pointer.known_good

    # --until-ready stops the runtime once it is ready, so ask a running one for its health.
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "launch", "--json", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_loopback_env())
    try:
        assert proc.stdout is not None
        running = json.loads(proc.stdout.readline())
        assert running["version"] == "1.2.0" and running["source"] == "staged"
        token = _runtime_token(running["pid"])
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.get(running["url"] + "healthz").status_code in (401, 403), "the token is required"
            health = client.get(running["url"] + "healthz", headers={"X-Desktop-Token": token})
        assert health.status_code == 200
        assert health.json() == {"ok": True, "version": "1.2.0", "pid": running["pid"]}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _runtime_token(pid: int) -> str:
    """The launch token, as this user can read it from the runtime's own environment."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"DESKTOP_RUNTIME_TOKEN="))


def test_cli_check_follows_a_dist_tag(published: Verdaccio, tmp_path: Path) -> None:
    base = ["--registry-kind", "npm", "--registry", published.package_url, "--data-dir", str(tmp_path / "data")]
    beta = cli_json("check", *base, "--channel", "beta")
    assert beta["available"] == "1.1.0" and beta["channel"] == "beta" and beta["offered"] == ["1.1.0"]
    assert cli_json("check", *base)["available"] == "1.2.0"
    missing = run_cli("check", *base, "--channel", "nightly", env=_loopback_env())
    assert missing.returncode == 1 and "no dist-tag 'nightly'" in missing.stderr


def test_host_gate_holds_although_the_document_drops_it(published: Verdaccio, tmp_path: Path) -> None:
    _, doc = published.document(GATED, accept=ACCEPT)
    assert "runtime" not in doc["versions"]["1.3.0"], "the abbreviated document carries no custom fields"
    data = tmp_path / "data"
    base = ["--registry-kind", "npm", "--registry", published.url + GATED, "--data-dir", str(data)]
    # Refused after the download (runtime.json's gate), or before it if the gate were in the document.
    first = json.loads(run_cli("update", *base, "--json", env=_loopback_env()).stdout)
    assert first["outcome"] in {"failed", "up-to-date"}
    if first["outcome"] == "failed":
        assert "requires shell >=99" in first["error"]
    checked = cli_json("check", *base)
    assert checked["available"] is None and checked["offered"] == ["1.3.0"]
    assert [s["version"] for s in checked["skipped"]] == ["1.3.0"]
    assert read_pointer(data / "current.json") is None
    assert not (data / "versions" / "1.3.0").exists()
