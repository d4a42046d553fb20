"""Envelope encoding round-trips, keeps the core intact across retries, and rejects garbage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stemrun.envelope import Envelope, decode, encode, peek_task, with_delivery
from stemrun.errors import DecodeError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=10,
)
envelopes = st.builds(
    Envelope,
    id=st.text(min_size=1),
    task=st.text(min_size=1),
    queue=st.text(min_size=1),
    args=st.dictionaries(st.text(), json_values, max_size=5),
    headers=st.dictionaries(st.text(), st.text(), max_size=3),
    priority=st.integers(0, 9),
    created_at=st.floats(0, 2e9),
    expires_at=st.none() | st.floats(0, 2e9),
    parent_id=st.none() | st.text(),
    root_id=st.none() | st.text(),
    canvas=st.none() | st.dictionaries(st.text(), json_values, max_size=4),
    attempt=st.integers(0, 100),
    eta=st.none() | st.floats(0, 2e9),
)


@given(envelopes)
def test_decode_inverts_encode(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@given(envelopes, st.integers(0, 50), st.none() | st.floats(0, 2e9))
def test_with_delivery_changes_only_delivery_metadata(
    envelope: Envelope, attempt: int, eta: float | None
) -> None:
    raw = encode(envelope)
    moved = decode(with_delivery(raw, attempt=attempt, eta=eta))
    assert moved.core() == envelope.core()
    assert (moved.attempt, moved.eta) == (attempt, eta)
    assert (
        json.loads(with_delivery(raw, attempt=attempt, eta=eta))["core"] == json.loads(raw)["core"]
    )


def test_signer_and_verifier_see_the_exact_core_bytes() -> None:
    seen: list[bytes] = []

    def signer(core: bytes) -> tuple[str, str]:
        seen.append(core)
        return "k1", "sig"

    def verifier(core: bytes, kid: str | None, sig: str | None) -> None:
        assert (core, kid, sig) == (seen[0], "k1", "sig")

    env = Envelope(id="a", task="t", queue="q", args={"x": 1})
    assert decode(encode(env, signer), verifier) == env


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "core": "{}"}',
        b'{"v": 1}',
        b'{"v": 1, "core": "{}"}',
        b'{"v": 1, "core": "{\\"id\\": 1, \\"task\\": \\"t\\", \\"queue\\": \\"q\\", '
        b'\\"args\\": {}, \\"headers\\": {}, \\"priority\\": 0, \\"created_at\\": 0}"}',
        b'{"v": 1, "core": "{\\"id\\": \\"i\\", \\"task\\": \\"t\\", \\"queue\\": \\"q\\", '
        b'\\"args\\": [], \\"headers\\": {}, \\"priority\\": 0, \\"created_at\\": 0}"}',
        b"\xff\xfe",
    ],
)
def test_malformed_bytes_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(raw)


def test_non_json_args_cannot_be_encoded() -> None:
    env = Envelope(id="a", task="t", queue="q", args={"when": object()})
    with pytest.raises(TypeError):
        encode(env)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (encode(Envelope(id="a", task="mail.send", queue="q", attempt=3)), ("mail.send", 3)),
        (b"garbage", (None, 0)),
    ],
)
def test_peek_task_is_best_effort(raw: bytes, expected: tuple[Any, int]) -> None:
    assert peek_task(raw) == expected
