"""The envelope: the unit that travels through a broker, and its byte encoding.

Wire format (version 1) is a JSON object:

    {"v": 1, "core": "<canonical JSON of the immutable fields>",
     "attempt": 0, "eta": null, "kid": null, "sig": null}

`core` holds what a producer decided once and nobody may change (id, task, queue, args, headers,
priority, lineage, expiry, and for canvas steps what to enqueue next). It is kept as a string so
that a signature covers its exact bytes and a worker can verify it before parsing the args.
Delivery metadata that changes on every retry or replay (`attempt`, `eta`) stays outside, so a
worker holding only a public key can retry a task without re-signing it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from stemrun.errors import DecodeError

WIRE_VERSION = 1
_SHOWN_KEY_ID_CHARS = 40

log = logging.getLogger("stemrun.signing")
#: Set once a worker without a verifier has warned about a signed message.
_ignored_signature = threading.Event()

#: Signs the core bytes; returns (key_id, signature). Provided by stemrun.signing.
Signer = Callable[[bytes], tuple[str, str]]
#: Verifies (core bytes, key_id, signature); raises SignatureInvalid. Provided by stemrun.signing.
Verifier = Callable[[bytes, str | None, str | None], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One task invocation as published: what to run, with what, and delivery metadata."""

    id: str
    task: str
    queue: str
    args: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    created_at: float = 0.0
    expires_at: float | None = None
    parent_id: str | None = None
    root_id: str | None = None
    canvas: dict[str, Any] | None = None  # what comes after this step (stemrun.canvas)
    attempt: int = 0
    eta: float | None = None

    def next_attempt(self, eta: float | None) -> Envelope:
        """The envelope for the following attempt, due at `eta`."""
        return replace(self, attempt=self.attempt + 1, eta=eta)

    def core(self) -> dict[str, Any]:
        """The immutable fields, as a JSON-ready dict."""
        core: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "args": self.args,
            "headers": self.headers,
            "priority": self.priority,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "parent_id": self.parent_id,
            "root_id": self.root_id,
        }
        # Only canvas steps carry the key, so a plain task's core bytes stay as they were.
        if self.canvas is not None:
            core["canvas"] = self.canvas
        return core


def encode(envelope: Envelope, signer: Signer | None = None) -> bytes:
    """Encode an envelope to bytes, signing its core when a signer is given.

    Raises TypeError/ValueError when args or headers are not JSON-serialisable.
    """
    core = json.dumps(envelope.core(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    kid, sig = signer(core.encode()) if signer else (None, None)
    outer = {
        "v": WIRE_VERSION,
        "core": core,
        "attempt": envelope.attempt,
        "eta": envelope.eta,
        "kid": kid,
        "sig": sig,
    }
    return json.dumps(outer, separators=(",", ":")).encode()


def with_delivery(raw: bytes, *, attempt: int, eta: float | None) -> bytes:
    """Re-encode `raw` with new delivery metadata, keeping the core (and its signature) intact.

    Raises DecodeError when `raw` is not a version-1 envelope.
    """
    outer = _outer(raw)
    outer["attempt"] = attempt
    outer["eta"] = eta
    return json.dumps(outer, separators=(",", ":")).encode()


def decode(raw: bytes, verifier: Verifier | None = None) -> Envelope:
    """Decode bytes into an envelope, verifying the signature first when a verifier is given.

    Without a verifier (a worker without signing), the first signed envelope logs a warning.
    Raises DecodeError for malformed input and SignatureInvalid for a bad signature.
    """
    outer = _outer(raw)
    core_text = outer["core"]
    if verifier is not None:
        verifier(core_text.encode(), outer.get("kid"), outer.get("sig"))
    elif outer.get("sig") is not None:
        _warn_ignored_signature(outer.get("kid"))
    try:
        core = json.loads(core_text)
        return Envelope(
            id=_str(core["id"]),
            task=_str(core["task"]),
            queue=_str(core["queue"]),
            args=_dict(core["args"]),
            headers=_dict(core["headers"]),
            priority=int(core["priority"]),
            created_at=float(core["created_at"]),
            expires_at=_opt_float(core.get("expires_at")),
            parent_id=_opt_str(core.get("parent_id")),
            root_id=_opt_str(core.get("root_id")),
            canvas=None if core.get("canvas") is None else _dict(core["canvas"]),
            attempt=int(outer.get("attempt", 0)),
            eta=_opt_float(outer.get("eta")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"malformed envelope core: {exc!r}") from exc


def _warn_ignored_signature(key_id: object) -> None:
    """Say once per process that signatures arrive but nothing checks them (docs/security.md)."""
    if _ignored_signature.is_set():
        return
    _ignored_signature.set()
    # The key id comes from the message: shown, but never at length.
    shown = repr(key_id)[:_SHOWN_KEY_ID_CHARS]
    log.warning(
        "received a signed message (key id %s) but this worker has no signing configured, so "
        "it runs signed and unsigned messages alike without checking any signature; configure "
        'the same signing keys on workers as on producers (docs/security.md, "Warnings"). '
        "Said once per process.",
        shown,
    )


def peek_task(raw: bytes) -> tuple[str | None, int]:
    """Best-effort (task name, attempt) of an envelope that may be undecodable, for dead letters."""
    try:
        outer = _outer(raw)
        task = json.loads(outer["core"]).get("task")
        return (task if isinstance(task, str) else None), int(outer.get("attempt", 0))
    except (DecodeError, ValueError, TypeError, AttributeError):
        return None, 0


def _outer(raw: bytes) -> dict[str, Any]:
    try:
        # The wire is UTF-8: json.loads would guess UTF-16 or -32 from a binary body's first
        # bytes and report that codec's failure instead.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise DecodeError(
            f"envelope is not UTF-8 text (byte 0x{byte:02x} at offset {exc.start}): "
            "a stemrun envelope is UTF-8 JSON"
        ) from exc
    try:
        outer = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"envelope is not JSON: {exc}") from exc
    if not isinstance(outer, dict) or outer.get("v") != WIRE_VERSION:
        raise DecodeError(f"unsupported envelope version: expected {WIRE_VERSION}")
    if not isinstance(outer.get("core"), str):
        raise DecodeError("envelope has no core")
    return outer


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value
