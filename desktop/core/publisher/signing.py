"""Which of the given keys may sign what, checked against a root before anything is written."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from desktop.core.publisher.errors import KeyNotAuthorisedError, ThresholdError

TOP_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)


def keyid(signer: Signer) -> str:
    return str(signer.public_key.keyid)


def short(key_id: str) -> str:
    """A key id as shown in messages: its first 16 hex digits."""
    return key_id[:16]


def unique(signers: Iterable[Signer]) -> list[Signer]:
    """`signers` without repeats of the same key, order kept."""
    seen: set[str] = set()
    out: list[Signer] = []
    for signer in signers:
        if keyid(signer) not in seen:
            seen.add(keyid(signer))
            out.append(signer)
    return out


def trusted_for(root: Root, role: str, signers: Sequence[Signer]) -> list[Signer]:
    """The given signers whose keys `root` trusts for `role`."""
    keyids = set(root.roles[role].keyids)
    return [s for s in unique(signers) if keyid(s) in keyids]


def _trusted_list(root: Root, role: str) -> str:
    ids = ", ".join(short(k) for k in sorted(root.roles[role].keyids))
    threshold = root.roles[role].threshold
    return f"{ids} (threshold {threshold})" if threshold > 1 else ids


def require(root: Root, role: str, signers: Sequence[Signer], feed: Path) -> list[Signer]:
    """The signers trusted for `role`, refusing when they do not reach the role's threshold."""
    ok = trusted_for(root, role, signers)
    threshold = root.roles[role].threshold
    if len(ok) >= threshold:
        return ok
    where = f"the {role} role in root v{root.version} of {feed}"
    if not ok:
        given = ", ".join(short(keyid(s)) for s in unique(signers))
        raise KeyNotAuthorisedError(f"key {given} is not authorised for {where} "
                                    f"(it trusts {_trusted_list(root, role)})")
    have = ", ".join(short(keyid(s)) for s in ok)
    raise ThresholdError(f"{where} needs signatures from {threshold} of its keys {_trusted_list(root, role)}; "
                         f"the given keys provide {len(ok)} ({have})")


def refuse_strangers(roots: Sequence[Root], signers: Sequence[Signer], feed: Path, role: str) -> None:
    """Refuse a key that `roots` trust for no role at all: it is a mistake, not a spare."""
    for signer in unique(signers):
        if not any(keyid(signer) in r.roles[name].keyids for r in roots for name in TOP_ROLES):
            root = roots[0]
            raise KeyNotAuthorisedError(
                f"key {short(keyid(signer))} is not authorised for the {role} role in root v{root.version} of {feed} "
                f"(it trusts {_trusted_list(root, role)})")


def signers_for(role: str, signers: Sequence[Signer], *roots: Root) -> list[Signer]:
    """Every given signer that any of `roots` trusts for `role` (all of them sign, not just a threshold)."""
    return [s for s in unique(signers) if any(keyid(s) in r.roles[role].keyids for r in roots)]


def sign(md: Metadata[Any], signers: Sequence[Signer]) -> bytes:
    """Replace `md`'s signatures with one from each signer; the serialized document."""
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    return md.to_bytes(JSONSerializer(compact=False))


def check_signed(root: Root, role: str, md: Metadata[Any], feed: Path) -> None:
    """Refuse metadata that does not carry a threshold of `root`'s valid signatures for `role`."""
    result = root.get_verification_result(role, md.signed_bytes, md.signatures)
    if not result.verified:
        raise ThresholdError(f"the new {role} metadata would carry {len(result.signed)} valid signature(s) from the "
                             f"{role} keys of root v{root.version} of {feed}, which needs {result.threshold}")
