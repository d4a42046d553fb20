"""Envelope signatures: HMAC-SHA256 and Ed25519 key rings built from the `signing` config.

A producer signs the canonical core bytes of an envelope with its *active* key; a worker verifies
them against its *ring* of trusted keys before anything in the core is parsed. The algorithm comes
from local config only, never from the message, so a forged envelope cannot downgrade it.

What is signed is `DOMAIN + key_id + "\\n" + core`: the domain keeps a stemrun signature from being
valid for anything else made with the same secret, and the key id binds the signature to the key
that made it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from stemrun.config.model import SigningConfig
from stemrun.envelope import Signer, Verifier
from stemrun.errors import SignatureInvalid, SigningConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported by the ed25519 functions that use it: HMAC-only and unsigned
# deployments (and every process that merely imports stemrun) never load it.

DOMAIN = b"stemrun.envelope.v1\n"
ED25519_KEY_BYTES = 32
HMAC_SECRET_BYTES = 32  # the SHA-256 block output size: more adds nothing, less weakens the MAC
_SHOWN_KID_CHARS = 40  # an attacker-chosen key id is echoed in errors, but never at length

#: What a signing config allows this process to do.
Mode = Literal["off", "sign", "verify-only"]
#: Checks one signature of `message` made with one key; False when it does not match.
_Check = Callable[[bytes, bytes], bool]


def signed_bytes(key_id: str, core: bytes) -> bytes:
    """The exact bytes a signature covers."""
    return DOMAIN + key_id.encode() + b"\n" + core


@dataclass(frozen=True, slots=True)
class HmacSigner:
    """Signs with one HMAC-SHA256 secret."""

    key_id: str
    secret: bytes

    def __call__(self, core: bytes) -> tuple[str, str]:
        mac = hmac.digest(self.secret, signed_bytes(self.key_id, core), hashlib.sha256)
        return self.key_id, base64.b64encode(mac).decode()


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """Signs with one Ed25519 private key."""

    key_id: str
    private_key: Ed25519PrivateKey

    def __call__(self, core: bytes) -> tuple[str, str]:
        signature = self.private_key.sign(signed_bytes(self.key_id, core))
        return self.key_id, base64.b64encode(signature).decode()


@dataclass(frozen=True, slots=True)
class KeyRingVerifier:
    """Verifies against every trusted key of one algorithm; unsigned envelopes are rejected."""

    algorithm: str
    checks: Mapping[str, _Check]

    def __call__(self, core: bytes, key_id: str | None, signature: str | None) -> None:
        """Return when the signature is good. Raises SignatureInvalid (never with key material)."""
        if not key_id or not signature:
            raise SignatureInvalid(
                f"missing signature: signing is on ({self.algorithm}) and every envelope must "
                f"carry a key id and a signature; its producer does not sign, or the signature "
                f"was stripped"
            )
        check = self.checks.get(key_id) if isinstance(key_id, str) else None
        if check is None:
            shown = str(key_id)[:_SHOWN_KID_CHARS]
            raise SignatureInvalid(
                f"unknown key id {shown!r}: this worker trusts only {self.trusted()} "
                f"({self.algorithm}); add the key to its ring or re-publish with a trusted key"
            )
        raw = _signature_bytes(signature)
        if raw is None or not check(signed_bytes(key_id, core), raw):
            raise SignatureInvalid(
                f"bad signature for key {key_id!r} ({self.algorithm}): the envelope was changed "
                f"after signing, or signed with a different secret under the same key id"
            )

    def trusted(self) -> str:
        """The trusted key ids, comma separated (ids are not secret)."""
        return ", ".join(sorted(self.checks))


def signer_for(signing: SigningConfig | None) -> Signer | None:
    """The signer of a producer, or None when signing is off.

    Raises SigningConfigError when the config cannot sign: no active key, an active key that is
    not configured, an ed25519 active key without a private key, or undecodable key material.
    """
    if signing is None:
        return None
    active = signing.active_key
    if signing.algorithm == "hmac-sha256":
        shared = _decoded(signing.keys, "keys")
        key_id = _active_id(active, shared, "signing.keys (STEM_SIGNING_KEYS)")
        return HmacSigner(key_id, shared[key_id])
    privates = _private_keys(signing)
    public_ring(signing)  # a private key that does not match its public key signs unverifiably
    where = "signing.private_keys (STEM_SIGNING_PRIVATE_KEYS)"
    if active is not None and active not in privates and active in signing.public_keys:
        raise SigningConfigError(
            f"signing.active_key: ed25519 active key {active!r} has only a public key; signing "
            f"needs its private key in {where} (a process with public keys only can verify "
            f"but not enqueue)"
        )
    key_id = _active_id(active, privates, where)
    return Ed25519Signer(key_id, privates[key_id])


def verifier_for(signing: SigningConfig | None) -> Verifier | None:
    """The verifier of a worker, or None when signing is off.

    Raises SigningConfigError when no key is trusted or key material does not decode.
    """
    if signing is None:
        return None
    if signing.algorithm == "hmac-sha256":
        checks = {
            kid: _hmac_check(secret) for kid, secret in _decoded(signing.keys, "keys").items()
        }
        where = "signing.keys (STEM_SIGNING_KEYS)"
    else:
        checks = {kid: _ed25519_check(key) for kid, key in public_ring(signing).items()}
        where = "signing.public_keys or signing.private_keys (STEM_SIGNING_PUBLIC_KEYS)"
    if not checks:
        raise SigningConfigError(f"signing: {signing.algorithm} trusts no key; add one to {where}")
    return KeyRingVerifier(signing.algorithm, checks)


def signing_mode(signing: SigningConfig | None) -> tuple[Mode, str | None]:
    """What this config can do ("off", "sign" and verify, "verify-only") and why it cannot sign.

    A config is verify-only when it holds no ed25519 private key at all, or names no active key
    among several: a worker's config. Raises SigningConfigError when it names a key to sign with
    that it cannot use (an incomplete producer config) or trusts no key.
    """
    if signing is None:
        return "off", None
    verifier_for(signing)
    try:
        signer_for(signing)
    except SigningConfigError as exc:
        no_private = signing.algorithm == "ed25519" and not signing.private_keys
        if no_private or signing.active_key is None:
            return "verify-only", str(exc)
        raise
    return "sign", None


def public_ring(signing: SigningConfig) -> dict[str, Ed25519PublicKey]:
    """Trusted ed25519 public keys: the configured ones plus those of the private keys.

    Raises SigningConfigError when a key does not decode or a key pair does not match.
    """
    ring = {
        kid: _public_key(kid, raw)
        for kid, raw in _decoded(signing.public_keys, "public_keys").items()
    }
    for kid, private in _private_keys(signing).items():
        derived = private.public_key()
        if kid in ring and _raw_public(ring[kid]) != _raw_public(derived):
            raise SigningConfigError(
                f"signing.private_keys.{kid}: the private key does not match public key {kid!r} "
                f"in signing.public_keys; one of them was copied from a different pair"
            )
        ring.setdefault(kid, derived)
    return ring


def key_id_problem(key_id: str) -> str | None:
    """Why `key_id` cannot name a key (it must survive the `id:base64,id2:base64` form), or None."""
    if not key_id or any(ch.isspace() or ch in ":," for ch in key_id):
        return f"key id {key_id!r} must be non-empty, without spaces, ':' or ','"
    return None


def generate_hmac_secret() -> str:
    """A fresh random HMAC-SHA256 secret, base64."""
    return base64.b64encode(secrets.token_bytes(HMAC_SECRET_BYTES)).decode()


def generate_ed25519_pair() -> tuple[str, str]:
    """A fresh Ed25519 key pair as (public, private), each 32 raw bytes in base64."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    encoded = (_raw_public(private.public_key()), raw_private)
    return base64.b64encode(encoded[0]).decode(), base64.b64encode(encoded[1]).decode()


def _private_keys(signing: SigningConfig) -> dict[str, Ed25519PrivateKey]:
    decoded = _decoded(signing.private_keys, "private_keys")
    return {kid: _private_key(kid, raw) for kid, raw in decoded.items()}


def _active_id(active: str | None, keys: Mapping[str, object], where: str) -> str:
    if not keys:
        raise SigningConfigError(f"signing: no key to sign with; add one to {where}")
    if active is None and len(keys) == 1:
        return next(iter(keys))  # as in stem.yaml: the only key is the active one
    if active is None:
        raise SigningConfigError(
            f"signing.active_key: several keys are configured ({', '.join(sorted(keys))}); "
            f"name the one that signs in signing.active_key (STEM_SIGNING_ACTIVE_KEY)"
        )
    if active not in keys:
        raise SigningConfigError(
            f"signing.active_key: active key {active!r} is not one of the keys in {where} "
            f"({', '.join(sorted(keys))})"
        )
    return active


def _decoded(keys: Mapping[str, str], section: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for kid, value in keys.items():
        problem = key_id_problem(kid)
        if problem is not None:
            raise SigningConfigError(f"signing.{section}: {problem}")
        try:
            out[kid] = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            out[kid] = b""
        if not out[kid]:
            raise SigningConfigError(f"signing.{section}.{kid}: key is not valid base64")
    return out


def _private_key(kid: str, raw: bytes) -> Ed25519PrivateKey:
    if len(raw) != ED25519_KEY_BYTES:
        raise SigningConfigError(
            f"signing.private_keys.{kid}: ed25519 keys are 32 raw bytes in base64, got {len(raw)}"
        )
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(raw)


def _public_key(kid: str, raw: bytes) -> Ed25519PublicKey:
    if len(raw) != ED25519_KEY_BYTES:
        raise SigningConfigError(
            f"signing.public_keys.{kid}: ed25519 keys are 32 raw bytes in base64, got {len(raw)}"
        )
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hmac_check(secret: bytes) -> _Check:
    def check(message: bytes, signature: bytes) -> bool:
        expected = hmac.digest(secret, message, hashlib.sha256)
        return hmac.compare_digest(expected, signature)

    return check


def _ed25519_check(public_key: Ed25519PublicKey) -> _Check:
    from cryptography.exceptions import InvalidSignature

    def check(message: bytes, signature: bytes) -> bool:
        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return check


def _signature_bytes(signature: object) -> bytes | None:
    if not isinstance(signature, str):
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None
