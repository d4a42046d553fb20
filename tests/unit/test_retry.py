"""retry.decide: the budget, backoff growth and cap, jitter bounds, retry_on / dont_retry_on."""

from __future__ import annotations

import random

import pytest

from stemrun.config.model import RetryBackoff, TaskConfig
from stemrun.retry import backoff, decide


def task(**options: object) -> TaskConfig:
    values: dict[str, object] = {
        "name": "t",
        "handler": "m:f",
        "queue": "default",
        "max_retries": 3,
        "retry_backoff": RetryBackoff(initial_s=1.0, max_s=10.0, factor=2.0, jitter=False),
    }
    values.update(options)
    return TaskConfig(**values)  # type: ignore[arg-type]


RNG = random.Random(7)
VALUE_ERROR = ("ValueError", "Exception", "BaseException")
CONN_REFUSED = ("ConnectionRefusedError", "ConnectionError", "OSError", "Exception")


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, None)],
    ids=["first", "second", "third", "budget-spent"],
)
def test_backoff_grows_until_the_budget_is_spent(attempt: int, expected: float | None) -> None:
    assert decide(task(), attempt, VALUE_ERROR, RNG) == expected


def test_total_runs_is_max_retries_plus_one() -> None:
    policy = task(max_retries=2)
    runs = 1
    while decide(policy, runs - 1, VALUE_ERROR, RNG) is not None:
        runs += 1
    assert runs == 3


def test_zero_retries_never_retries() -> None:
    assert decide(task(max_retries=0), 0, VALUE_ERROR, RNG) is None


@pytest.mark.parametrize(("attempt", "expected"), [(3, 8.0), (4, 10.0), (60, 10.0), (5000, 10.0)])
def test_backoff_is_capped(attempt: int, expected: float) -> None:
    policy = RetryBackoff(initial_s=1.0, max_s=10.0, factor=2.0, jitter=False)
    assert backoff(policy, attempt, RNG) == expected


@pytest.mark.parametrize("attempt", range(8))
def test_jitter_stays_between_half_and_full_backoff(attempt: int) -> None:
    policy = RetryBackoff(initial_s=1.0, max_s=30.0, factor=2.0, jitter=True)
    full = min(30.0, 2.0**attempt)
    rng = random.Random(attempt)
    delays = [backoff(policy, attempt, rng) for _ in range(200)]
    assert all(full / 2 <= delay <= full for delay in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("options", "exc_types", "retried"),
    [
        ({"dont_retry_on": ("ValueError",)}, VALUE_ERROR, False),
        ({"dont_retry_on": ("ValueError",)}, CONN_REFUSED, True),
        ({"retry_on": ("ConnectionError",)}, CONN_REFUSED, True),  # a subclass matches via MRO
        ({"retry_on": ("ConnectionError",)}, VALUE_ERROR, False),
        ({"retry_on": ("OSError",), "dont_retry_on": ("ConnectionError",)}, CONN_REFUSED, False),
        ({"dont_retry_on": ("Exception",)}, VALUE_ERROR, False),
        ({"retry_on": ("ConnectionError",)}, ("HardTimeLimitExceeded",), False),
        ({}, ("HardTimeLimitExceeded",), True),
    ],
    ids=[
        "deny-listed",
        "deny-list-other",
        "allow-listed-subclass",
        "not-allow-listed",
        "deny-wins-over-allow",
        "deny-a-base-class",
        "hard-limit-not-allow-listed",
        "hard-limit-default",
    ],
)
def test_exception_filters(
    options: dict[str, object], exc_types: tuple[str, ...], retried: bool
) -> None:
    delay = decide(task(**options), 0, exc_types, RNG)
    assert (delay is not None) is retried


def test_requested_delay_replaces_backoff() -> None:
    assert decide(task(), 0, VALUE_ERROR, RNG, requested_s=42.0) == 42.0
    assert decide(task(), 0, VALUE_ERROR, RNG, requested_s=-5.0) == 0.0


def test_forced_retry_ignores_filters_but_not_the_budget() -> None:
    policy = task(retry_on=("ConnectionError",), max_retries=1)
    assert decide(policy, 0, ("Retry",), RNG, requested_s=3.0, forced=True) == 3.0
    assert decide(policy, 1, ("Retry",), RNG, requested_s=3.0, forced=True) is None
