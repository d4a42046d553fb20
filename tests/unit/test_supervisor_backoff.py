"""Crashed children restart with exponential backoff, never in a tight loop; edits are debounced."""

from __future__ import annotations

from stemrun.supervisor.backoff import Backoff, BackoffPolicy
from stemrun.supervisor.reload import Debouncer


def crash_immediately(backoff: Backoff, times: int, start: float = 0.0) -> list[float]:
    """Delays of `times` crashes, each child dying right after its (delayed) start."""
    delays, now = [], start
    for _ in range(times):
        delay = backoff.crashed(started_at=now, now=now + 0.01)
        delays.append(delay)
        now += 0.01 + delay
    return delays


def test_delay_doubles_from_half_a_second_to_thirty() -> None:
    policy = BackoffPolicy(loop_crashes=100)  # no crash-loop cap in this test
    assert crash_immediately(Backoff(policy), 9) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_child_that_stayed_up_thirty_seconds_restarts_fast_again() -> None:
    backoff = Backoff()
    crash_immediately(backoff, 3)  # next delay would be 4 s
    assert backoff.crashed(started_at=100.0, now=131.0) == 0.5
    assert backoff.crashed(started_at=131.5, now=132.0) == 1


def test_five_crashes_within_a_minute_is_a_loop_retried_at_the_max() -> None:
    backoff = Backoff()
    delays = crash_immediately(backoff, 5)
    assert delays[:4] == [0.5, 1, 2, 4]
    assert delays[4] == 30 and backoff.looping and backoff.recent_crashes == 5


def test_crashes_spread_over_more_than_a_minute_are_not_a_loop() -> None:
    backoff = Backoff()
    for minute in range(6):
        backoff.crashed(started_at=minute * 61.0, now=minute * 61.0 + 20)
        assert not backoff.looping


def test_never_a_tight_loop() -> None:
    delays = crash_immediately(Backoff(), 50)
    assert min(delays) >= 0.5
    assert sum(delays[:5]) >= 30  # the first five crashes alone span half a minute


def test_debouncer_waits_for_quiet_then_fires_once() -> None:
    debouncer = Debouncer(quiet_s=0.2)
    assert debouncer.take(0.0) is None
    debouncer.changed(1.0)
    debouncer.changed(1.15)  # the editor's second write pushes the reload out
    assert debouncer.take(1.3) is None
    assert debouncer.take(1.35) is False
    assert debouncer.take(2.0) is None


def test_debouncer_remembers_a_code_change_among_the_batch() -> None:
    debouncer = Debouncer(quiet_s=0.2)
    debouncer.changed(0.0, code=True)
    debouncer.changed(0.1)
    assert debouncer.take(0.35) is True
