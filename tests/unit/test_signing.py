"""Signed envelopes: tampering is always detected, keys rotate, incomplete configs refuse."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import Delivery
from stemrun.brokers.memory import MemoryBroker
from stemrun.client import Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.config.model import Config, SigningConfig
from stemrun.envelope import Envelope, Signer, Verifier, decode, encode, with_delivery
from stemrun.errors import SignatureInvalid, SigningConfigError
from stemrun.signing import (
    generate_ed25519_pair,
    generate_hmac_secret,
    signer_for,
    signing_mode,
    verifier_for,
)
from stemrun.state import TaskState
from stemrun.worker import settle
from stemrun.worker.admit import Admitted, admit

HMAC_A, HMAC_B, HMAC_X = (generate_hmac_secret() for _ in range(3))
ED_A, ED_B, ED_X = (generate_ed25519_pair() for _ in range(3))  # (public, private)


def hmac_config(keys: dict[str, str], active: str | None = None) -> SigningConfig:
    return SigningConfig(algorithm="hmac-sha256", keys=keys, active_key=active)


def ed_config(
    public: dict[str, str], private: dict[str, str] | None = None, active: str | None = None
) -> SigningConfig:
    return SigningConfig(
        algorithm="ed25519", public_keys=public, private_keys=private or {}, active_key=active
    )


def signer(config: SigningConfig) -> Signer:
    built = signer_for(config)
    assert built is not None
    return built


def verifier(config: SigningConfig) -> Verifier:
    built = verifier_for(config)
    assert built is not None
    return built


# Producer A signs; the worker ring trusts A and B. Both algorithms, one table.
PAIRS = {
    "hmac-sha256": (
        hmac_config({"a": HMAC_A}, "a"),
        hmac_config({"a": HMAC_A, "b": HMAC_B}),
    ),
    "ed25519": (
        ed_config({"a": ED_A[0]}, {"a": ED_A[1]}, "a"),
        ed_config({"a": ED_A[0], "b": ED_B[0]}),
    ),
}

texts = st.text(min_size=1, max_size=20)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
envelopes = st.builds(
    Envelope,
    id=texts,
    task=texts,
    queue=texts,
    args=st.dictionaries(st.text(max_size=8), json_scalars, max_size=4),
    headers=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    priority=st.integers(0, 9),
    created_at=st.floats(0, 2e9),
    parent_id=st.none() | texts,
    attempt=st.integers(0, 20),
)
algorithms = st.sampled_from(sorted(PAIRS))


def outer(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def with_core(raw: bytes, **changes: Any) -> bytes:
    """The same signed message with fields of its core changed (a tampered envelope)."""
    data = outer(raw)
    core = json.loads(data["core"])
    core.update(changes)
    data["core"] = json.dumps(core, sort_keys=True, separators=(",", ":"))
    return json.dumps(data).encode()


def rejected(raw: bytes, verify: Verifier) -> str:
    with pytest.raises(SignatureInvalid) as caught:
        decode(raw, verify)
    return str(caught.value)


# -- property tests ----------------------------------------------------------------------------


@given(algorithms, envelopes)
def test_signed_envelopes_verify_and_round_trip(algorithm: str, envelope: Envelope) -> None:
    producer, ring = PAIRS[algorithm]
    assert decode(encode(envelope, signer(producer)), verifier(ring)) == envelope


@given(algorithms, envelopes, st.sampled_from(["id", "task", "queue", "args", "headers"]), texts)
def test_any_changed_core_field_is_rejected(
    algorithm: str, envelope: Envelope, field: str, value: str
) -> None:
    producer, ring = PAIRS[algorithm]
    raw = encode(envelope, signer(producer))
    new: Any = {"tampered": value} if field in ("args", "headers") else value
    if envelope.core()[field] == new:
        new = {"tampered": value + "!"} if field in ("args", "headers") else value + "!"
    assert "bad signature" in rejected(with_core(raw, **{field: new}), verifier(ring))


@given(algorithms, envelopes, st.data())
def test_any_byte_flip_in_the_signed_core_is_rejected(
    algorithm: str, envelope: Envelope, data: st.DataObject
) -> None:
    producer, ring = PAIRS[algorithm]
    message = outer(encode(envelope, signer(producer)))
    core = bytearray(message["core"].encode())
    index = data.draw(st.integers(0, len(core) - 1))
    bit = data.draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
    core[index] ^= bit
    try:
        message["core"] = core.decode()
    except UnicodeDecodeError:
        return  # not a string any more: the wire format cannot even carry it
    with pytest.raises(SignatureInvalid):
        decode(json.dumps(message).encode(), verifier(ring))


@given(algorithms, envelopes, st.data())
def test_any_byte_flip_in_the_signature_is_rejected(
    algorithm: str, envelope: Envelope, data: st.DataObject
) -> None:
    producer, ring = PAIRS[algorithm]
    message = outer(encode(envelope, signer(producer)))
    sig = bytearray(base64.b64decode(message["sig"]))
    sig[data.draw(st.integers(0, len(sig) - 1))] ^= data.draw(st.integers(1, 255))
    message["sig"] = base64.b64encode(bytes(sig)).decode()
    assert "bad signature" in rejected(json.dumps(message).encode(), verifier(ring))


@given(algorithms, envelopes)
def test_a_changed_key_id_is_rejected(algorithm: str, envelope: Envelope) -> None:
    producer, ring = PAIRS[algorithm]
    message = outer(encode(envelope, signer(producer)))
    message["kid"] = "b"  # trusted, but it did not make this signature
    assert "bad signature" in rejected(json.dumps(message).encode(), verifier(ring))
    message["kid"] = "nobody"
    assert "unknown key id 'nobody'" in rejected(json.dumps(message).encode(), verifier(ring))


@given(algorithms, envelopes)
def test_unsigned_envelopes_are_rejected_when_signing_is_on(
    algorithm: str, envelope: Envelope
) -> None:
    _, ring = PAIRS[algorithm]
    assert "missing signature" in rejected(encode(envelope), verifier(ring))


@given(algorithms, envelopes, st.integers(0, 50), st.none() | st.floats(0, 2e9))
def test_delivery_metadata_changes_keep_the_signature_valid(
    algorithm: str, envelope: Envelope, attempt: int, eta: float | None
) -> None:
    producer, ring = PAIRS[algorithm]
    moved = with_delivery(encode(envelope, signer(producer)), attempt=attempt, eta=eta)
    assert decode(moved, verifier(ring)).attempt == attempt


@settings(max_examples=25)
@given(envelopes)
def test_rotation_trusts_both_keys_then_drops_the_old_one(envelope: Envelope) -> None:
    by_a = encode(envelope, signer(hmac_config({"a": HMAC_A, "b": HMAC_B}, "a")))
    by_b = encode(envelope, signer(hmac_config({"a": HMAC_A, "b": HMAC_B}, "b")))
    both = verifier(hmac_config({"a": HMAC_A, "b": HMAC_B}))
    assert decode(by_a, both) == decode(by_b, both) == envelope
    only_b = verifier(hmac_config({"b": HMAC_B}))
    assert decode(by_b, only_b) == envelope
    assert "unknown key id 'a'" in rejected(by_a, only_b)


@settings(max_examples=25)
@given(envelopes)
def test_ed25519_rotation_with_public_keys_only(envelope: Envelope) -> None:
    by_a = encode(envelope, signer(ed_config({}, {"a": ED_A[1], "b": ED_B[1]}, "a")))
    by_b = encode(envelope, signer(ed_config({}, {"a": ED_A[1], "b": ED_B[1]}, "b")))
    both = verifier(ed_config({"a": ED_A[0], "b": ED_B[0]}))
    assert decode(by_a, both) == decode(by_b, both) == envelope
    only_b = verifier(ed_config({"b": ED_B[0]}))
    assert "unknown key id 'a'" in rejected(by_a, only_b)


# -- examples ------------------------------------------------------------------------------


def test_the_algorithm_comes_from_local_config_not_the_message() -> None:
    envelope = Envelope(id="1", task="t", queue="q")
    # Same key id, other algorithm: an HMAC made with the ed25519 *public* key (which an attacker
    # may know) must not pass an ed25519 worker.
    public_as_secret = hmac_config({"a": ED_A[0]}, "a")
    forged = encode(envelope, signer(public_as_secret))
    assert "bad signature" in rejected(forged, verifier(ed_config({"a": ED_A[0]})))


def test_a_secret_under_the_same_key_id_is_not_trusted() -> None:
    envelope = Envelope(id="1", task="t", queue="q")
    forged = encode(envelope, signer(hmac_config({"a": HMAC_X}, "a")))
    assert "bad signature" in rejected(forged, verifier(hmac_config({"a": HMAC_A})))
    forged_ed = encode(envelope, signer(ed_config({}, {"a": ED_X[1]}, "a")))
    assert "bad signature" in rejected(forged_ed, verifier(ed_config({"a": ED_A[0]})))


def test_errors_never_contain_key_material() -> None:
    ring = verifier(hmac_config({"a": HMAC_A, "b": HMAC_B}))
    raw = encode(Envelope(id="1", task="t", queue="q"), signer(hmac_config({"x": HMAC_X}, "x")))
    for tampered in (raw, encode(Envelope(id="1", task="t", queue="q"))):
        message = rejected(tampered, ring)
        for secret in (HMAC_A, HMAC_B, HMAC_X):
            assert secret not in message and secret[:12] not in message


@pytest.mark.parametrize("algorithm", sorted(PAIRS))
def test_garbage_signatures_and_key_ids_are_rejected_not_crashing(algorithm: str) -> None:
    producer, trusting = PAIRS[algorithm]
    ring = verifier(trusting)
    raw = encode(Envelope(id="1", task="t", queue="q"), signer(producer))
    garbage: list[tuple[Any, Any]] = [("a", "not base64!"), ("a", 7), (["a"], "AAAA")]
    garbage += [("a" * 10_000, "AAAA"), ("a", ""), ("a", "A" * 400), (None, "AAAA")]
    for kid, sig in garbage:
        message = outer(raw)
        message.update(kid=kid, sig=sig)
        message_text = rejected(json.dumps(message).encode(), ring)
        assert len(message_text) < 400


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (hmac_config({"a": HMAC_A}, "b"), "active key 'b' is not one of the keys"),
        (hmac_config({"a": HMAC_A, "b": HMAC_B}), "name the one that signs"),
        (ed_config({"a": ED_A[0]}, {}, "a"), "'a' has only a public key"),
        (ed_config({"a": ED_A[0], "b": ED_B[0]}, {"b": ED_B[1]}, "a"), "has only a public key"),
        (ed_config({}, {"a": ED_A[1]}, "z"), "active key 'z' is not one of the keys"),
        (ed_config({"a": ED_B[0]}, {"a": ED_A[1]}, "a"), "does not match public key 'a'"),
        (hmac_config({"a": "%%%"}, "a"), "signing.keys.a: key is not valid base64"),
        (ed_config({}, {"a": HMAC_A[:8]}, "a"), "32 raw bytes"),
    ],
)
def test_incomplete_producer_configs_name_the_problem(config: SigningConfig, problem: str) -> None:
    with pytest.raises(SigningConfigError, match=problem):
        signer_for(config)


def test_signing_modes_separate_verify_only_workers_from_broken_producers() -> None:
    assert signing_mode(None) == ("off", None)
    assert signing_mode(hmac_config({"a": HMAC_A}, "a")) == ("sign", None)
    mode, why = signing_mode(ed_config({"a": ED_A[0]}, {}, "a"))
    assert mode == "verify-only" and why is not None and "public key" in why
    assert signing_mode(hmac_config({"a": HMAC_A, "b": HMAC_B}))[0] == "verify-only"
    with pytest.raises(SigningConfigError, match="has only a public key"):
        signing_mode(ed_config({"a": ED_A[0], "b": ED_B[0]}, {"b": ED_B[1]}, "a"))
    with pytest.raises(SigningConfigError, match="trusts no key"):
        signing_mode(ed_config({}, {}))


# -- the producer and the worker's admission -------------------------------------------------


def app_config(tmp_path: Path, signing: dict[str, Any]) -> Config:
    data = {
        "broker": "memory://",
        "queues": {"default": {}},
        "tasks": {"add": {"handler": "x:add"}},
        "signing": signing,
    }
    return config_from_mapping(data, root_dir=tmp_path)


def memory_stem(config: Config) -> Stem:
    clock = ManualClock()
    return Stem(config, broker=MemoryBroker(clock=clock), backend=MemoryBackend(clock=clock))


def test_a_producer_that_cannot_sign_publishes_nothing(tmp_path: Path) -> None:
    signing = {"algorithm": "ed25519", "public_keys": {"a": ED_A[0]}, "active_key": "a"}
    stem = memory_stem(app_config(tmp_path, signing))
    with pytest.raises(SigningConfigError, match="has only a public key"):
        stem.enqueue("add", {"x": 1}, task_id="t1")
    assert stem.status("t1").state is TaskState.UNKNOWN
    assert stem.broker.fetch(["default"], 10, consumer="c", lease_s=30) == []


def test_enqueue_signs_with_the_active_key(tmp_path: Path) -> None:
    stem = memory_stem(
        app_config(tmp_path, {"keys": {"a": HMAC_A, "b": HMAC_B}, "active_key": "b"})
    )
    task_id = stem.enqueue("add", {"x": 1})
    [delivery] = stem.broker.fetch(["default"], 10, consumer="c", lease_s=30)
    assert outer(delivery.body)["kid"] == "b"
    assert decode(delivery.body, verifier(hmac_config({"b": HMAC_B}))).id == task_id


def delivery_of(body: bytes) -> Delivery:
    return Delivery(id="t1", queue="default", body=body, priority=0, receipt="r", deliveries=1)


def test_admit_dead_letters_a_bad_signature_before_reading_the_task(tmp_path: Path) -> None:
    config = app_config(tmp_path, {"keys": {"a": HMAC_A}})
    ring = verifier_for(config.signing)
    signed = encode(Envelope(id="t1", task="add", queue="default"), signer_for(config.signing))
    # A tampered task name that is not even declared: the signature is checked first.
    for body in (with_core(signed, task="rm_rf"), encode(Envelope(id="t1", task="add", queue="q"))):
        result = admit(delivery_of(body), config, 1.0, verifier=ring)
        assert isinstance(result, settle.Settlement) and result.dead is not None
        assert result.dead.reason == "signature-invalid"
        assert result.dead.error is not None and result.dead.error["type"] == "SignatureInvalid"
        # Nothing vouches for the id "t1": the status of a genuine t1 is left alone.
        assert result.transition is None
    assert isinstance(admit(delivery_of(signed), config, 1.0, verifier=ring), Admitted)
