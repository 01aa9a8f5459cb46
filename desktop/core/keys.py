"""Ed25519 signing keys for the feed: generate, store, load, and the printed public form."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from desktop.core.errors import UsageError
from desktop.core.state import atomic_write_bytes

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
        raise UsageError(f"{out} already exists; refusing to overwrite a key")
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
    atomic_write_bytes(pub_path, (public + "\n").encode())
    return KeyPair(out, pub_path, public)


def load_signer(path: Path) -> CryptoSigner:
    """A signer for the private key in `path`."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an ed25519 private key")
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


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
