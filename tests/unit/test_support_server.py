"""The loopback test server itself: caching, ranges, faults, the npm protocol and a fast stop."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import CHUNK_SIZE, LoopbackServer


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def test_etag_and_304(server: LoopbackServer, client: httpx.Client) -> None:
    server.put("/index.json", b'{"a": 1}', "application/json")
    first = client.get(server.url + "/index.json")
    assert first.status_code == 200
    assert first.content == b'{"a": 1}'
    assert first.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == "8"
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    second = client.get(server.url + "/index.json", headers={"If-None-Match": etag})
    assert second.status_code == 304
    assert second.content == b""

    changed = server.put("/index.json", b'{"a": 2}', "application/json")
    assert changed is None
    third = client.get(server.url + "/index.json", headers={"If-None-Match": etag})
    assert third.status_code == 200 and third.content == b'{"a": 2}'

    reqs = server.requests
    assert [r.status for r in reqs] == [200, 304, 200]
    assert reqs[1].headers["if-none-match"] == etag
    assert reqs[1].bytes_sent == 0
    assert 0 < reqs[1].wire_bytes <= 2048
    assert reqs[0].bytes_sent == 8 and reqs[0].request_bytes > 0 and reqs[0].response_header_bytes > 0

    missing = client.get(server.url + "/nope")
    assert missing.status_code == 404
    head = client.head(server.url + "/index.json")
    assert head.status_code == 200 and head.headers["content-length"] == "8" and head.content == b""
    assert server.requests[-1].bytes_sent == 0
    server.clear_requests()
    assert server.requests == []


def test_range_and_if_range_on_streamed_file(server: LoopbackServer, client: httpx.Client,
                                             tmp_path: Path) -> None:
    payload = os.urandom(3 * CHUNK_SIZE + 123)
    archive = tmp_path / "big.bin"
    archive.write_bytes(payload)
    server.put_file("/big.bin", archive)

    full = client.get(server.url + "/big.bin")
    assert full.status_code == 200 and full.content == payload
    etag = full.headers["etag"]

    tail = client.get(server.url + "/big.bin", headers={"Range": "bytes=1000-", "If-Range": etag})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes 1000-{len(payload) - 1}/{len(payload)}"
    assert tail.content == payload[1000:]

    middle = client.get(server.url + "/big.bin", headers={"Range": "bytes=10-19"})
    assert middle.status_code == 206 and middle.content == payload[10:20]
    assert middle.headers["content-length"] == "10"
    suffix = client.get(server.url + "/big.bin", headers={"Range": "bytes=-5"})
    assert suffix.status_code == 206 and suffix.content == payload[-5:]
    backwards = client.get(server.url + "/big.bin", headers={"Range": "bytes=9-3"})
    assert backwards.status_code == 200 and backwards.content == payload

    stale = client.get(server.url + "/big.bin", headers={"Range": "bytes=1000-", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == payload

    beyond = client.get(server.url + "/big.bin", headers={"Range": f"bytes={len(payload)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(payload)}"

    archive.write_bytes(payload + b"more")  # the ETag follows the file on disk
    changed = client.get(server.url + "/big.bin", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.content == payload + b"more"


def test_serve_directory(server: LoopbackServer, client: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.json").write_text('{"ok": true}')
    server.serve_directory("/feed", tmp_path)
    resp = client.get(server.url + "/feed/sub/index.json")
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert resp.headers["content-type"] == "application/json"
    (tmp_path / "late.txt").write_text("read at request time")
    assert client.get(server.url + "/feed/late.txt").text == "read at request time"
    assert client.get(server.url + "/feed/%2e%2e/%2e%2e/etc/passwd").status_code == 404
    assert client.get(server.url + "/feed/sub").status_code == 404
    assert len(server.requests_to("/feed/")) == 4


def test_truncate(server: LoopbackServer, client: httpx.Client) -> None:
    server.put("/a.bin", b"x" * 1000)
    server.fault("/a.bin", "truncate", at=100)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url + "/a.bin")
    [req] = server.requests
    assert req.status == 200 and req.bytes_sent == 100


def test_once_fault_then_recovery(server: LoopbackServer, client: httpx.Client) -> None:
    server.put("/doc", b"fine")
    server.fault("/doc", "status", code=503, times=2, headers={"Retry-After": "1"})
    first = client.get(server.url + "/doc")
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert client.get(server.url + "/doc").status_code == 503
    recovered = client.get(server.url + "/doc")
    assert recovered.status_code == 200 and recovered.content == b"fine"
    assert [r.status for r in server.requests_to("/doc")] == [503, 503, 200]


def test_garbage_corrupt_oversize_slow(server: LoopbackServer, client: httpx.Client) -> None:
    body = bytes(range(256)) * 8
    server.put("/b", body)

    server.fault("/b", "garbage", size=50, times=1)
    junk = client.get(server.url + "/b")
    assert junk.status_code == 200 and len(junk.content) == 50
    with pytest.raises(ValueError):
        junk.json()

    server.fault("/b", "corrupt", offset=7, times=1)
    bad = client.get(server.url + "/b").content
    assert len(bad) == len(body) and bad != body
    assert [i for i in range(len(body)) if bad[i] != body[i]] == [7]

    server.fault("/b", "oversize", extra=10, times=1)
    big = client.get(server.url + "/b")
    assert "content-length" not in big.headers
    assert len(big.content) == len(body) + 10 and big.content[: len(body)] == body

    server.fault("/b", "slow", chunk=512, delay=0.05, times=1)
    started = time.monotonic()
    assert client.get(server.url + "/b").content == body
    assert time.monotonic() - started >= 0.14  # 4 pieces, 3 pauses
    assert client.get(server.url + "/b").content == body


def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_npm_document_and_integrity(server: LoopbackServer, client: httpx.Client, tmp_path: Path) -> None:
    v1 = tmp_path / "one.tgz"
    v1.write_bytes(os.urandom(200_000))
    v2 = tmp_path / "two.tgz"
    v2.write_bytes(os.urandom(1000))
    server.publish_npm_package("@acme/runtime", "1.0.0", v1, extra={"engines": {"shell": ">=1"}})
    published = server.publish_npm_package("@acme/runtime", "2.0.0-beta.1", v2, tag="next",
                                           tags={"beta": "2.0.0-beta.1"})
    assert published["dist"]["integrity"] == _sri(v2.read_bytes())

    resp = client.get(server.url + "/@acme%2fruntime",
                      headers={"Accept": "application/vnd.npm.install-v1+json"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert doc["name"] == "@acme/runtime"
    assert doc["dist-tags"] == {"latest": "1.0.0", "next": "2.0.0-beta.1", "beta": "2.0.0-beta.1"}
    assert set(doc["versions"]) == {"1.0.0", "2.0.0-beta.1"} and "1.0.0" in doc["time"]
    one = doc["versions"]["1.0.0"]
    assert one["name"] == "@acme/runtime" and one["version"] == "1.0.0"
    assert one["engines"] == {"shell": ">=1"}
    assert one["dist"]["tarball"] == server.url + "/@acme/runtime/-/runtime-1.0.0.tgz"
    assert server.requests[-1].headers["accept"] == "application/vnd.npm.install-v1+json"

    tarball = client.get(one["dist"]["tarball"])
    assert tarball.status_code == 200 and tarball.content == v1.read_bytes()
    assert _sri(tarball.content) == one["dist"]["integrity"]
    assert hashlib.sha1(tarball.content).hexdigest() == one["dist"]["shasum"]

    server.set_dist_tag("@acme/runtime", "latest", "2.0.0-beta.1")
    assert server.npm_document("@acme/runtime")["dist-tags"]["latest"] == "2.0.0-beta.1"
    assert client.get(server.url + "/@acme/runtime").json()["dist-tags"]["latest"] == "2.0.0-beta.1"

    etag = resp.headers["etag"]
    assert client.get(server.url + "/@acme%2Fruntime", headers={"If-None-Match": etag}).status_code == 200

    server.set_npm_document("@acme/runtime", b"{not json")
    assert client.get(server.url + "/@acme%2fruntime").content == b"{not json"
    with pytest.raises(ValueError):
        server.npm_document("@acme/runtime")


def test_stall_does_not_block_and_stop_is_fast() -> None:
    server = LoopbackServer().start()
    outcome: list[BaseException | int] = []

    def stalled_get() -> None:
        try:
            with httpx.Client(timeout=30) as c:
                outcome.append(c.get(server.url + "/slow").status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        server.put("/slow", b"eventually")
        server.put("/fast", b"now")
        server.fault("/slow", "stall")
        worker = threading.Thread(target=stalled_get)
        worker.start()
        assert server.wait_for_stalled(1, timeout=5)
        with httpx.Client(timeout=5) as c:
            assert c.get(server.url + "/fast").content == b"now"
        # an idle keep-alive connection from a raw socket must not hold stop() up either
        idle = socket.create_connection(("127.0.0.1", server.port))
    finally:
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
    idle.close()
    worker.join(5)
    assert not worker.is_alive()
    assert elapsed < 1.5
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError)
    assert [r.path for r in server.requests] == ["/fast"]


def test_stall_with_timeout_then_serves() -> None:
    with LoopbackServer() as server, httpx.Client(timeout=5) as c:
        server.put("/x", b"late")
        server.fault("/x", "stall", seconds=0.2, times=1)
        started = time.monotonic()
        assert c.get(server.url + "/x").content == b"late"
        assert time.monotonic() - started >= 0.2
        with pytest.raises(ValueError):
            server.fault("/x", "explode")
        with pytest.raises(TypeError):
            server.fault("/x", "truncate", offset=3)
