"""Flow control store methods (rate slots, unique claims, paused queues) on every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from stemrun.backends.base import ResultBackend
from stemrun.clock import ManualClock

# -- rate limit slots --------------------------------------------------------------------------


def test_first_reservation_is_now_and_later_ones_are_spaced(
    backend: ResultBackend, clock: ManualClock
) -> None:
    now = clock.now()
    slots = [backend.reserve_rate_slot({"task:a": 0.2}, now) for _ in range(4)]
    assert slots == pytest.approx([now, now + 0.2, now + 0.4, now + 0.6])


def test_a_passed_slot_does_not_build_credit(backend: ResultBackend, clock: ManualClock) -> None:
    now = clock.now()
    backend.reserve_rate_slot({"task:a": 1.0}, now)
    later = now + 60
    # A limiter idle for a minute allows one start now, then spacing again (no burst of 60).
    assert backend.reserve_rate_slot({"task:a": 1.0}, later) == pytest.approx(later)
    assert backend.reserve_rate_slot({"task:a": 1.0}, later) == pytest.approx(later + 1.0)


def test_limiters_are_independent_by_key(backend: ResultBackend, clock: ManualClock) -> None:
    now = clock.now()
    backend.reserve_rate_slot({"task:a:tenant1": 10.0}, now)
    assert backend.reserve_rate_slot({"task:a:tenant2": 10.0}, now) == pytest.approx(now)
    assert backend.reserve_rate_slot({"task:a:tenant1": 10.0}, now) == pytest.approx(now + 10)


def test_several_limiters_share_one_slot_honouring_each(
    backend: ResultBackend, clock: ManualClock
) -> None:
    now = clock.now()
    backend.reserve_rate_slot({"queue:q": 5.0}, now)
    # The task limiter is free, the queue limiter is not: the slot waits for the queue.
    slot = backend.reserve_rate_slot({"task:a": 1.0, "queue:q": 5.0}, now)
    assert slot == pytest.approx(now + 5)
    # Both moved past that slot by their own interval.
    assert backend.reserve_rate_slot({"task:a": 1.0}, now) == pytest.approx(now + 6)
    assert backend.reserve_rate_slot({"queue:q": 5.0}, now) == pytest.approx(now + 10)


def test_concurrent_reservations_get_distinct_evenly_spaced_slots(
    backend_opener: Callable[[], ResultBackend], clock: ManualClock
) -> None:
    handles = [backend_opener() for _ in range(4)]
    now = clock.now()
    slots: list[float] = []
    lock = threading.Lock()

    def reserve(handle: ResultBackend) -> None:
        for _ in range(10):
            slot = handle.reserve_rate_slot({"task:a": 0.1}, now)
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=reserve, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(slots) == pytest.approx([now + 0.1 * i for i in range(40)])


# -- unique keys -------------------------------------------------------------------------------


def test_claim_returns_none_then_the_holder(backend: ResultBackend, clock: ManualClock) -> None:
    now = clock.now()
    assert backend.claim_unique("send:7", "id-1", 60, now) is None
    assert backend.claim_unique("send:7", "id-2", 60, now) == "id-1"
    assert backend.claim_unique("send:7", "id-1", 60, now) == "id-1"
    assert backend.claim_unique("send:8", "id-2", 60, now) is None


def test_a_claim_lapses_after_its_ttl(backend: ResultBackend, clock: ManualClock) -> None:
    backend.claim_unique("send:7", "id-1", 10, clock.now())
    clock.advance(11)
    assert backend.claim_unique("send:7", "id-2", 10, clock.now()) is None
    assert backend.claim_unique("send:7", "id-3", 10, clock.now()) == "id-2"


def test_release_only_by_the_holder(backend: ResultBackend, clock: ManualClock) -> None:
    now = clock.now()
    backend.claim_unique("send:7", "id-1", 60, now)
    assert backend.release_unique("send:7", "id-2") is False
    assert backend.claim_unique("send:7", "id-2", 60, now) == "id-1"
    assert backend.release_unique("send:7", "id-1") is True
    assert backend.release_unique("send:7", "id-1") is False
    assert backend.claim_unique("send:7", "id-2", 60, now) is None


def test_racing_claims_have_exactly_one_winner(
    backend_opener: Callable[[], ResultBackend], clock: ManualClock
) -> None:
    handles = [backend_opener() for _ in range(4)]
    now = clock.now()
    results: dict[str, str | None] = {}
    lock = threading.Lock()

    def claim(index: int, handle: ResultBackend) -> None:
        for n in range(10):
            task_id = f"id-{index}-{n}"
            holder = handle.claim_unique("report:1", task_id, 60, now)
            with lock:
                results[task_id] = holder

    threads = [threading.Thread(target=claim, args=(i, h)) for i, h in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [task_id for task_id, holder in results.items() if holder is None]
    assert len(winners) == 1
    assert {holder for holder in results.values() if holder is not None} == set(winners)


# -- paused queues -----------------------------------------------------------------------------


def test_pause_and_resume_are_persistent_and_idempotent(
    backend_opener: Callable[[], ResultBackend],
) -> None:
    first, second = backend_opener(), backend_opener()
    assert first.paused_queues() == set()
    first.set_paused("emails", True)
    first.set_paused("emails", True)
    first.set_paused("reports", True)
    assert second.paused_queues() == {"emails", "reports"}
    second.set_paused("emails", False)
    second.set_paused("never-paused", False)
    assert first.paused_queues() == {"reports"}
