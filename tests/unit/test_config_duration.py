"""Durations as users write them."""

from __future__ import annotations

import pytest

from stemrun.config import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("0.5m", 30.0),
        ("1.5", 1.5),
        ("30", 30.0),
        (30, 30.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_durations(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "10x", "5 minutes", "-1s", "1e3", "s", "1.s", "1h30m"])
def test_invalid_strings_say_what_a_duration_looks_like(value: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like '250ms', '10s'"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan")])
def test_numbers_must_be_finite_and_not_negative(value: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds >= 0"):
        parse_duration(value)


def test_booleans_are_not_durations() -> None:
    with pytest.raises(ValueError, match="got True"):
        parse_duration(True)
