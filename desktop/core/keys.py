"""Ed25519 signing keys for the feed: generate, store, load, and the printed public form.

The private key file is 0600; the public key file is 0644 (it is meant to be copied around).
Nothing here is ever called to invent a key behind the publisher's back: `generate` runs
only for `desktop keygen`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from desktop.core.errors import ConflictError, SigningKeyError, UsageError
from desktop.core.state import fsync_dir

PREFIX = "ed25519:"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    public: str


def public_text(key: Ed25519PublicKey) -> str:
    """The printed form of a public key: `ed25519:<64 hex digits>`."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + raw.hex()


def generate(out: Path) -> KeyPair:
    """A new key pair: private key in `out` (mode 0600), public key in `out.pub`."""
    if out.exists():
        raise ConflictError(f"{out} already exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(out, 0o600)
    public = public_text(private.public_key())
    pub_path = out.with_name(out.name + ".pub")
    _write_public(pub_path, (public + "\n").encode())
    return KeyPair(out, pub_path, public)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise SigningKeyError(f"cannot write {path}: {exc.strerror or exc}") from None
    fsync_dir(path.parent)


def load_signer(path: Path) -> CryptoSigner:
    """A signer for the private key in `path`."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an ed25519 private key")
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def load_signers(paths: Iterable[Path]) -> list[CryptoSigner]:
    """One signer per private key file, in order, each key once."""
    signers: list[CryptoSigner] = []
    seen: set[str] = set()
    for path in paths:
        signer = load_signer(Path(path))
        if signer.public_key.keyid not in seen:
            seen.add(signer.public_key.keyid)
            signers.append(signer)
    return signers


def keyid_of(signer: CryptoSigner) -> str:
    """The TUF key id of a signer's public key (what root metadata lists)."""
    return str(signer.public_key.keyid)


def parse_public_key(text: str) -> SSlibKey:
    """A public key given as printed by keygen, or as the path of a `.pub` file."""
    value = text.strip()
    if not value.startswith(PREFIX):
        path = Path(value).expanduser()
        try:
            value = path.read_text().strip()
        except OSError:
            raise UsageError(f"{text!r} is neither an ed25519 public key nor a readable key file") from None
    if not value.startswith(PREFIX):
        raise UsageError(f"public key must look like {PREFIX}<64 hex digits>")
    try:
        raw = bytes.fromhex(value[len(PREFIX):])
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise UsageError(f"public key must look like {PREFIX}<64 hex digits>") from None
    return SSlibKey.from_crypto(key)


def public_of(signer: CryptoSigner) -> str:
    return PREFIX + str(signer.public_key.keyval["public"])
