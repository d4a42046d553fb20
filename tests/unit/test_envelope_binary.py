"""A message body that is not UTF-8 is reported as such (what `stemrun dlq show` prints).

json.loads on bytes guesses UTF-16 or UTF-32 from the first bytes, so a binary body used to be
reported as a `'utf-16-be' codec` failure, which points nowhere near the real problem.
"""

from __future__ import annotations

import pytest

from stemrun.envelope import Envelope, decode, encode, peek_task
from stemrun.errors import DecodeError


@pytest.mark.parametrize(
    ("raw", "byte", "offset"),
    [
        (b"\x00\x01binary\xff\x00", "0xff", 8),  # read as UTF-16-BE before
        (b"\xff\xfe\x00\x00", "0xff", 0),  # read as UTF-32-LE before
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "0x89", 0),
        ('{"v": 1, "core": "caf\xe9"}'.encode("latin-1"), "0xe9", 21),
    ],
)
def test_a_binary_body_is_reported_as_not_utf8(raw: bytes, byte: str, offset: int) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(raw)
    assert str(caught.value) == (
        f"envelope is not UTF-8 text (byte {byte} at offset {offset}): "
        "a stemrun envelope is UTF-8 JSON"
    )
    assert peek_task(raw) == (None, 0)


def test_json_in_another_encoding_is_not_an_envelope() -> None:
    utf16 = encode(Envelope(id="a", task="t", queue="q")).decode().encode("utf-16")
    with pytest.raises(DecodeError, match="not UTF-8 text"):
        decode(utf16)


def test_utf8_text_that_is_not_json_says_so() -> None:
    with pytest.raises(DecodeError, match=r"^envelope is not JSON: Expecting value"):
        decode("naïve".encode())
