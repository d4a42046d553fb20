"""The chord counter of the result backend contract, run against every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from stemrun.backends.base import ResultBackend
from stemrun.clock import ManualClock


def test_results_come_back_in_index_order_exactly_on_completion(backend: ResultBackend) -> None:
    assert backend.chord_add("c1", 2, {"n": 2}, 3) is None
    assert backend.chord_add("c1", 0, "zero", 3) is None
    assert backend.chord_add("c1", 1, [1], 3) == ["zero", [1], {"n": 2}]


def test_the_same_index_counts_once_and_keeps_its_first_result(backend: ResultBackend) -> None:
    assert backend.chord_add("c1", 0, "first", 2) is None
    assert backend.chord_add("c1", 0, "second", 2) is None
    assert backend.chord_add("c1", 1, None, 2) == ["first", None]


def test_a_repeat_after_completion_returns_the_results_again(backend: ResultBackend) -> None:
    # A redelivered completion must be able to re-drive its (idempotent) callback enqueue.
    backend.chord_add("c1", 0, 0, 2)
    assert backend.chord_add("c1", 1, 1, 2) == [0, 1]
    assert backend.chord_add("c1", 0, "late", 2) == [0, 1]


def test_chords_are_counted_separately(backend: ResultBackend) -> None:
    assert backend.chord_add("c1", 0, "a", 2) is None
    assert backend.chord_add("c2", 1, "b", 2) is None
    assert backend.chord_add("c2", 0, "c", 2) == ["c", "b"]
    assert backend.chord_add("solo", 0, "d", 1) == ["d"]


def test_an_index_outside_the_chord_is_refused(backend: ResultBackend) -> None:
    with pytest.raises(ValueError):
        backend.chord_add("c1", 3, None, 3)
    with pytest.raises(ValueError):
        backend.chord_add("c1", -1, None, 3)


def test_concurrent_members_complete_the_chord_exactly_once(
    backend_opener: Callable[[], ResultBackend],
) -> None:
    size, threads = 40, 4
    handles = [backend_opener() for _ in range(threads)]
    completions: list[list[object]] = []
    lock = threading.Lock()

    def member(worker: int) -> None:
        for index in range(worker, size, threads):
            done = handles[worker].chord_add("race", index, index * 2, size)
            if done is not None:
                with lock:
                    completions.append(done)

    runners = [threading.Thread(target=member, args=(w,)) for w in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    assert completions == [[i * 2 for i in range(size)]]


def test_counters_expire_with_purge(backend: ResultBackend, clock: ManualClock) -> None:
    backend.chord_add("c1", 0, "a", 2, ttl_s=10)
    clock.advance(11)
    backend.purge_expired(clock.now())
    assert backend.chord_add("c1", 1, "b", 2) is None
