"""The one download path against a real loopback server: resume, verification, and a misbehaving world."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from desktop.core.digests import Integrity
from desktop.core.download import Fetcher
from desktop.core.errors import (
    DigestMismatchError,
    DiskSpaceError,
    NetworkError,
    RegistryError,
    UnexpectedContentError,
    UsageError,
)
from desktop.core.limits import NetConfig
from desktop.core.text import redact_url
from tests.support.server import LoopbackServer

BODY = os.urandom(300_000)
INTEGRITY = Integrity("sha512", hashlib.sha512(BODY).digest())
FAST_FAIL = NetConfig(read_timeout=5, document_deadline=4, min_rate=20_000, rate_grace=1.5)


def _etag(server: LoopbackServer, path: str) -> str:
    with httpx.Client() as client:
        return client.head(server.url + path).headers["etag"]


def _leave_part(dest: Path, data: bytes, validator: str, url: str) -> None:
    dest.with_name(dest.name + ".part").write_bytes(data)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({"validator": validator,
                                                                    "url": redact_url(url)}))


def test_part_that_is_already_complete_is_not_a_failure(server: LoopbackServer, tmp_path: Path) -> None:
    """Killed after the last byte but before the rename: the server answers 416 to the Range."""
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    _leave_part(dest, BODY, _etag(server, "/a.tgz"), f"{server.url}/a.tgz")
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY
    statuses = [r.status for r in server.requests if r.method == "GET"]
    assert statuses == [416, 200]
    assert not dest.with_name(dest.name + ".part").exists()


def test_half_part_resumes_with_range(server: LoopbackServer, tmp_path: Path) -> None:
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    _leave_part(dest, BODY[:100_000], _etag(server, "/a.tgz"), f"{server.url}/a.tgz")
    with Fetcher() as fetcher:
        received = fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY
    request = [r for r in server.requests if r.method == "GET"][0]
    assert request.status == 206 and request.bytes_sent == len(BODY) - 100_000
    assert received == len(BODY) - 100_000


def test_part_of_other_bytes_is_replaced_when_validator_changed(server: LoopbackServer, tmp_path: Path) -> None:
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    _leave_part(dest, b"x" * 100_000, '"an-old-etag"', f"{server.url}/a.tgz")
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY


def test_a_part_replaced_by_a_symlink_is_never_written_through(server: LoopbackServer, tmp_path: Path) -> None:
    server.put("/a.tgz", BODY)
    outside = tmp_path / "outside"
    outside.write_bytes(BODY[:100_000])
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    dest = downloads / "a.archive"
    (downloads / "a.archive.part").symlink_to(outside)
    (downloads / "a.archive.part.json").write_text(json.dumps(
        {"validator": _etag(server, "/a.tgz"), "url": f"{server.url}/a.tgz"}))
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY and not dest.is_symlink()
    assert outside.read_bytes() == BODY[:100_000], "nothing was written outside the data dir"
    assert [r.status for r in server.requests if r.method == "GET"] == [200], "no resume through the link"


def test_wrong_digest_removes_the_part(server: LoopbackServer, tmp_path: Path) -> None:
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    wrong = Integrity("sha512", hashlib.sha512(b"other").digest())
    with Fetcher() as fetcher, pytest.raises(DigestMismatchError):
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=wrong)
    assert list(tmp_path.iterdir()) == []


def test_plain_http_to_other_hosts_is_refused(tmp_path: Path) -> None:
    with Fetcher() as fetcher, pytest.raises(UsageError, match="only https"):
        fetcher.download("http://example.com/a.tgz", tmp_path / "a")


def test_credentials_never_appear_in_errors(server: LoopbackServer, tmp_path: Path) -> None:
    server.fault("/a.tgz", "status", code=503)
    url = server.url.replace("http://", "http://user:s3cret-token@") + "/a.tgz"
    with Fetcher() as fetcher, pytest.raises(NetworkError) as raised:
        fetcher.download(url, tmp_path / "a")
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


def test_sri_parsing_prefers_the_strongest_digest_and_refuses_sha1() -> None:
    sri = f"sha1-{'A' * 27}= {INTEGRITY.sri}"
    assert Integrity.parse(sri) == INTEGRITY
    assert Integrity.parse(f"sha1-{'A' * 27}=") is None, "sha1 collisions are cheap"
    assert Integrity.parse("md5-AAAA") is None


# -- the world misbehaves ---------------------------------------------------------------------

@pytest.mark.parametrize("what", ["document", "download"])
def test_a_server_that_drips_fails_within_the_grace_period(server: LoopbackServer, tmp_path: Path,
                                                           what: str) -> None:
    server.put("/a", BODY)
    server.fault("/a", "slow", chunk=1, delay=0.5)
    started = time.monotonic()
    with Fetcher(FAST_FAIL) as fetcher, pytest.raises(NetworkError, match="too slow|longer than"):
        if what == "document":
            fetcher.get_document(f"{server.url}/a")
        else:
            fetcher.download(f"{server.url}/a", tmp_path / "a", integrity=INTEGRITY)
    assert time.monotonic() - started < 10, "bounded by the minimum rate, not the per-read timeout"


def test_a_silent_server_is_bounded_by_the_read_timeout(server: LoopbackServer) -> None:
    server.put("/a", BODY)
    server.fault("/a", "stall", seconds=30)
    started = time.monotonic()
    with Fetcher(NetConfig(read_timeout=1.0, connect_timeout=1.0)) as fetcher, \
            pytest.raises(NetworkError, match="timed out"):
        fetcher.get_document(f"{server.url}/a")
    assert time.monotonic() - started < 5


def test_double_gzip_is_refused_without_decoding_it(server: LoopbackServer) -> None:
    server.put("/doc.json", b"\0" * (4 * 1024 * 1024))
    server.fault("/doc.json", "encode", layers=("gzip", "gzip"))
    with Fetcher() as fetcher, pytest.raises(UnexpectedContentError, match="encoded the response 2 times"):
        fetcher.get_document(f"{server.url}/doc.json")
    assert fetcher.bytes_received == 0, "refused from the headers, before any body is read"


def test_a_gzip_bomb_document_stops_at_the_cap_as_bytes_arrive() -> None:
    """Run in a subprocess so its peak memory is its own: 2 GB of zeros in a small gzip."""
    code = r'''
import resource, sys, threading, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from desktop.core.download import Fetcher
from desktop.core.errors import RegistryError
z = zlib.compressobj(1, zlib.DEFLATED, 31)
zeros = b"\0" * (1 << 20)
body = b"".join(z.compress(zeros) for _ in range(2048)) + z.flush()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = ThreadingHTTPServer(("127.0.0.1", 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
try:
    Fetcher().get_document(f"http://127.0.0.1:{srv.server_address[1]}/x")
except RegistryError as e:
    print("refused:", e)
print("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
'''
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert "refused:" in result.stdout and "larger than" in result.stdout, result.stderr
    peak = int(result.stdout.split("peak_mb")[1])
    assert peak < 512, f"decoding held {peak} MB (a decoder that is not bounded needs 2 GB)"


def test_a_re_encoding_cdn_still_delivers_the_genuine_bytes(server: LoopbackServer, tmp_path: Path) -> None:
    tarball = gzip.compress(BODY, mtime=0)
    server.put("/a.tgz", tarball)
    server.fault("/a.tgz", "encode", layers=("gzip",))
    integrity = Integrity("sha512", hashlib.sha512(tarball).digest())
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", tmp_path / "a", integrity=integrity)
    assert (tmp_path / "a").read_bytes() == tarball


def test_a_mislabelled_encoding_is_a_transient_mismatch(server: LoopbackServer, tmp_path: Path) -> None:
    """The CDN says gzip but sends the plain archive: not decodable, not the release's fault."""
    server.put("/a.tgz", BODY)
    server.fault("/a.tgz", "encode", layers=(), label="gzip")
    with Fetcher() as fetcher, pytest.raises(DigestMismatchError):
        fetcher.download(f"{server.url}/a.tgz", tmp_path / "a", integrity=INTEGRITY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_a_proxy_block_page_is_named_as_such(server: LoopbackServer, tmp_path: Path, content_type: str) -> None:
    page = b"<!DOCTYPE html><html><body>Blocked by your organisation's proxy</body></html>"
    server.fault("/a.tgz", "status", code=200, body=page, headers={"X-Proxy": "1"},
                 times=None)
    server.put("/a.tgz", BODY)
    with Fetcher() as fetcher, pytest.raises(UnexpectedContentError, match="HTML page"):
        fetcher.download(f"{server.url}/a.tgz", tmp_path / "a", integrity=INTEGRITY)
    assert list(tmp_path.iterdir()) == []
    with Fetcher() as fetcher, pytest.raises(UnexpectedContentError, match="HTML page"):
        fetcher.get_json(f"{server.url}/a.tgz")


def test_oversized_document_is_refused(server: LoopbackServer) -> None:
    server.put("/doc", b"{" + b" " * 5000 + b"}")
    with Fetcher(NetConfig(max_document_bytes=1000)) as fetcher, pytest.raises(RegistryError, match="larger"):
        fetcher.get_document(f"{server.url}/doc")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> object:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_download_frees_what_it_wrote(server: LoopbackServer, tiny_disk: Path) -> None:
    big = os.urandom(20 * 1024 * 1024)
    server.put("/big.tgz", big)
    with Fetcher(NetConfig(min_free_bytes=0)) as fetcher, \
            pytest.raises(DiskSpaceError, match="not enough disk space: need .* have"):
        fetcher.download(f"{server.url}/big.tgz", tiny_disk / "big",
                         integrity=Integrity("sha512", hashlib.sha512(big).digest()))
    assert list(tiny_disk.iterdir()) == []
    assert os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize > 7 * 1024 * 1024


def test_a_server_that_drips_its_headers_is_bounded_by_the_deadline() -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.5):
                try:
                    conn.sendall(b"X-Drip: 1\r\n")
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    started = time.monotonic()
    try:
        with Fetcher(NetConfig(read_timeout=5, document_deadline=3)) as fetcher, \
                pytest.raises(NetworkError, match="took longer than 3 s"):
            fetcher.get_document(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 8, "per-read timeouts never fire while a header line arrives every 0.5 s"


def test_redaction_takes_the_whole_userinfo() -> None:
    from desktop.core.text import redact

    assert redact("at https://alice:p@ss@host.example/x") == "at https://***@host.example/x"
    assert redact_url("https://alice:p@ss@host.example:8443/x") == "https://***@host.example:8443/x"
