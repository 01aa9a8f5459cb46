"""Digests the downloaded bytes must match (no I/O, import-cheap)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

_SRI_ORDER = ("sha512", "sha384", "sha256")
STRONG = frozenset(_SRI_ORDER)


@dataclass(frozen=True)
class Integrity:
    """A digest the downloaded bytes must match (SRI `sha512-<base64>`, or a TUF sha256)."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, integrity: object) -> Integrity | None:
        """The strongest usable digest of an SRI string; sha1 is not accepted (collisions are cheap)."""
        candidates: dict[str, bytes] = {}
        if isinstance(integrity, str):
            for token in integrity.split():
                algo, _, value = token.partition("-")
                algo = algo.lower()
                if algo not in _SRI_ORDER or not value:
                    continue
                try:
                    raw = base64.b64decode(value.split("?")[0], validate=True)
                except (binascii.Error, ValueError):
                    continue
                if len(raw) == hashlib.new(algo).digest_size:
                    candidates[algo] = raw
        for algo in _SRI_ORDER:
            if algo in candidates:
                return cls(algo, candidates[algo])
        return None

    @classmethod
    def from_hex(cls, algorithm: str, hexdigest: str) -> Integrity | None:
        if algorithm not in STRONG:
            return None
        try:
            raw = bytes.fromhex(hexdigest)
        except ValueError:
            return None
        return cls(algorithm, raw) if len(raw) == hashlib.new(algorithm).digest_size else None

    @property
    def sri(self) -> str:
        return f"{self.algorithm}-{base64.b64encode(self.digest).decode()}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)
