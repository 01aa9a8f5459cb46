"""The one download path: resume, restart and verification against a real loopback server."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from desktop.core.download import Fetcher, Integrity
from desktop.core.errors import DigestMismatchError, UsageError
from tests.support.server import LoopbackServer

BODY = os.urandom(300_000)
INTEGRITY = Integrity("sha512", hashlib.sha512(BODY).digest())


def _etag(server: LoopbackServer, path: str) -> str:
    with httpx.Client() as client:
        return client.head(server.url + path).headers["etag"]


def _leave_part(dest: Path, data: bytes, validator: str) -> None:
    dest.with_name(dest.name + ".part").write_bytes(data)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({"validator": validator}))


def test_part_that_is_already_complete_is_not_a_failure(server: LoopbackServer, tmp_path: Path) -> None:
    """Killed after the last byte but before the rename: the server answers 416 to the Range."""
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    _leave_part(dest, BODY, _etag(server, "/a.tgz"))
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY
    statuses = [r.status for r in server.requests if r.method == "GET"]
    assert statuses == [416, 200]
    assert not dest.with_name(dest.name + ".part").exists()


def test_half_part_resumes_with_range(server: LoopbackServer, tmp_path: Path) -> None:
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    _leave_part(dest, BODY[:100_000], _etag(server, "/a.tgz"))
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY
    request = [r for r in server.requests if r.method == "GET"][0]
    assert request.status == 206 and request.bytes_sent == len(BODY) - 100_000


def test_part_of_other_bytes_is_replaced_when_validator_changed(server: LoopbackServer, tmp_path: Path) -> None:
    server.put("/a.tgz", BODY)
    dest = tmp_path / "a.archive"
    _leave_part(dest, b"x" * 100_000, '"an-old-etag"')
    with Fetcher() as fetcher:
        fetcher.download(f"{server.url}/a.tgz", dest, integrity=INTEGRITY)
    assert dest.read_bytes() == BODY


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


def test_sri_parsing_prefers_the_strongest_digest() -> None:
    sri = f"sha1-{'A' * 27}= {INTEGRITY.sri}"
    assert Integrity.parse(sri) == INTEGRITY
    assert Integrity.parse(None, hashlib.sha1(BODY).hexdigest()) == Integrity("sha1", hashlib.sha1(BODY).digest())
    assert Integrity.parse("md5-AAAA") is None
