"""Task counters, cancel and batched reads: the same behaviour on every result backend."""

from __future__ import annotations

import threading
from collections.abc import Callable

from stemrun.backends.base import ResultBackend
from stemrun.backends.record import CANCEL_REQUESTED, StatusRecord, Transition
from stemrun.clock import ManualClock
from stemrun.state import TaskState

STARTED = '["started","email.send","default"]'
SUCCEEDED = '["succeeded","email.send","default"]'


def _record(task_id: str, state: TaskState = TaskState.QUEUED, attempt: int = 0) -> StatusRecord:
    return StatusRecord(
        id=task_id, task="email.send", state=state, queue="default", attempt=attempt
    )


def test_counters_start_empty(backend: ResultBackend) -> None:
    assert backend.counters() == {}


def test_increments_add_up_and_create_missing_counters(backend: ResultBackend) -> None:
    backend.incr_counters({STARTED: 2, SUCCEEDED: 1})
    backend.incr_counters({STARTED: 3})
    backend.incr_counters({})
    assert backend.counters() == {STARTED: 5, SUCCEEDED: 1}


def test_counters_are_shared_by_every_handle(backend_opener: Callable[[], ResultBackend]) -> None:
    first, second = backend_opener(), backend_opener()
    first.incr_counters({STARTED: 1})
    second.incr_counters({STARTED: 1, SUCCEEDED: 7})
    assert first.counters() == second.counters() == {STARTED: 2, SUCCEEDED: 7}


def test_concurrent_increments_never_lose_a_count(
    backend_opener: Callable[[], ResultBackend],
) -> None:
    handles = [backend_opener() for _ in range(4)]
    rounds = 25

    def add(handle: ResultBackend) -> None:
        for _ in range(rounds):
            handle.incr_counters({STARTED: 1, SUCCEEDED: 2})

    threads = [threading.Thread(target=add, args=(handle,)) for handle in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handles[0].counters() == {STARTED: 4 * rounds, SUCCEEDED: 8 * rounds}


def test_large_totals_stay_exact(backend: ResultBackend) -> None:
    backend.incr_counters({"duration": 2**40})
    backend.incr_counters({"duration": 1})
    assert backend.counters()["duration"] == 2**40 + 1


def test_cancel_a_queued_task_makes_it_cancelled_for_good(
    backend: ResultBackend, clock: ManualClock
) -> None:
    backend.create([_record("t1")])
    after = backend.cancel("t1", clock.now(), result_ttl_s=60.0)
    assert after is not None and after.state == TaskState.CANCELLED
    assert after.meta["reason"] == "cancelled"
    stored = backend.get("t1")
    assert stored is not None and stored.state == TaskState.CANCELLED
    assert stored.finished_at == clock.now() and stored.expires_at == clock.now() + 60.0
    # a worker's `running` write for the queued attempt is fenced out now
    running = Transition(task_id="t1", attempt=0, state=TaskState.RUNNING)
    assert backend.transition([running]) == [False]


def test_cancel_a_task_waiting_for_its_retry(backend: ResultBackend, clock: ManualClock) -> None:
    backend.create([_record("t1", TaskState.RETRIED, attempt=1)])
    after = backend.cancel("t1", clock.now())
    assert after is not None and after.state == TaskState.CANCELLED
    assert backend.transition([Transition(task_id="t1", attempt=2, state=TaskState.RUNNING)]) == [
        False
    ]


def test_cancel_a_running_task_flags_it_and_keeps_it_running(
    backend: ResultBackend, clock: ManualClock
) -> None:
    backend.create([_record("t1", TaskState.RUNNING)])
    after = backend.cancel("t1", clock.now())
    assert after is not None and after.state == TaskState.RUNNING
    stored = backend.get("t1")
    assert stored is not None and stored.meta[CANCEL_REQUESTED] == clock.now()
    # its worker settles it as cancelled; the flag stays beside the reason
    done = Transition(
        task_id="t1", attempt=0, state=TaskState.CANCELLED, changes={"meta": {"reason": "x"}}
    )
    assert backend.transition([done]) == [True]
    final = backend.get("t1")
    assert final is not None and CANCEL_REQUESTED in final.meta


def test_cancel_a_finished_task_changes_nothing(backend: ResultBackend, clock: ManualClock) -> None:
    backend.create([_record("t1", TaskState.SUCCEEDED)])
    after = backend.cancel("t1", clock.now())
    assert after is not None and after.state == TaskState.SUCCEEDED
    assert after.meta == {}


def test_cancel_an_unknown_task(backend: ResultBackend, clock: ManualClock) -> None:
    assert backend.cancel("nope", clock.now()) is None


def test_get_many_returns_the_live_records(backend: ResultBackend) -> None:
    backend.create([_record("a"), _record("b", TaskState.RUNNING)])
    found = backend.get_many(["a", "b", "missing", "a"])
    assert sorted(found) == ["a", "b"]
    assert found["b"].state == TaskState.RUNNING
    assert backend.get_many([]) == {}
