"""Consistency of the `signing` section: keys decode, and the active key exists."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from stemrun.config.problem import Problem

_ED25519_KEY_BYTES = 32
_KEY_SETS = {"hmac-sha256": ("keys",), "ed25519": ("public_keys", "private_keys")}


def _decoded_length(value: str) -> int | None:
    try:
        return len(base64.b64decode(value.strip(), validate=True))
    except (binascii.Error, ValueError):
        return None


def _check_key(algorithm: str, section: str, key_id: str, value: Any) -> Iterator[Problem]:
    if not isinstance(value, str):
        return
    path = ("signing", section, key_id)
    length = _decoded_length(value)
    if length is None or length == 0:
        yield Problem(path=path, message=f"key '{key_id}' is not valid base64")
    elif algorithm == "ed25519" and length != _ED25519_KEY_BYTES:
        message = f"ed25519 key '{key_id}' must be 32 raw bytes in base64, got {length} bytes"
        yield Problem(path=path, message=message)


def _key_ids(signing: dict[str, Any], sections: tuple[str, ...]) -> list[str]:
    ids: list[str] = []
    for section in sections:
        keys = signing.get(section)
        ids.extend(key for key in (keys if isinstance(keys, dict) else {}) if key not in ids)
    return ids


def check_signing(signing: Any) -> Iterator[Problem]:
    """Problems of the signing section (nothing when it is absent or mistyped)."""
    if not isinstance(signing, dict):
        return
    algorithm = signing.get("algorithm", "hmac-sha256")
    sections = _KEY_SETS.get(algorithm) if isinstance(algorithm, str) else None
    if sections is None:
        return
    for section in sections:
        keys = signing.get(section)
        for key_id, value in (keys if isinstance(keys, dict) else {}).items():
            yield from _check_key(algorithm, section, key_id, value)
    ids = _key_ids(signing, sections)
    where = " or ".join(f"signing.{section}" for section in sections)
    if not ids:
        message = f"{algorithm} needs at least one key in {where}"
        yield Problem(path=("signing",), message=message, at_key=True)
        return
    active = signing.get("active_key")
    if isinstance(active, str) and active not in ids:
        known = ", ".join(ids)
        message = f"active key '{active}' is not one of the {algorithm} keys in {where} ({known})"
        yield Problem(path=("signing", "active_key"), message=message)
