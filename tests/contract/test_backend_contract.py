"""The result backend contract, run against every backend (see conftest.BACKEND_FACTORIES)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from stemrun.backends.base import ResultBackend, Telemetry
from stemrun.backends.record import MAX_STARTS, StatusRecord, Transition
from stemrun.clock import ManualClock
from stemrun.errors import BackendError
from stemrun.state import TaskState
from stemrun.store_base import require
from stemrun.telemetry import ActiveTask, Heartbeat


def record(task_id: str, **fields: object) -> StatusRecord:
    values: dict[str, object] = {
        "id": task_id,
        "task": "email.send",
        "state": TaskState.QUEUED,
        "queue": "default",
        "args": {"recipient": "ops@example.com"},
        "created_at": 1.0,
    }
    values.update(fields)
    return StatusRecord(**values)  # type: ignore[arg-type]


def move(task_id: str, attempt: int, state: TaskState, **changes: object) -> Transition:
    return Transition(task_id=task_id, attempt=attempt, state=state, changes=changes)


def test_create_inserts_only_absent_records(backend: ResultBackend) -> None:
    assert backend.create([record("a"), record("b")]) == [True, True]
    again = [record("a", queue="other"), record("c"), record("c")]
    assert backend.create(again) == [False, True, False]
    got = backend.get("a")
    assert got is not None and got.queue == "default"


def test_record_round_trips_every_field(backend: ResultBackend) -> None:
    full = record(
        "a",
        state=TaskState.FAILED,
        attempt=2,
        result={"n": [1, 2]},
        error={"type": "ValueError", "message": "bad", "traceback": "tb"},
        progress=0.5,
        progress_meta={"stage": "x"},
        meta={"replays": 1},
        started_at=2.0,
        finished_at=3.5,
        worker="w1",
        dead_letter_reason="max-retries-exhausted",
        parent_id="p",
        root_id="r",
        expires_at=2e9,
        receipt="0/1-0/1",
        starts=1,
    )
    backend.create([full])
    assert backend.get("a") == full


def test_get_unknown_is_none(backend: ResultBackend) -> None:
    assert backend.get("never-enqueued") is None


def test_transition_to_terminal_wins(backend: ResultBackend) -> None:
    backend.create([record("a")])
    assert backend.transition([move("a", 0, TaskState.RUNNING, worker="w1")]) == [True]
    done = move("a", 0, TaskState.SUCCEEDED, result={"ok": True}, finished_at=5.0)
    late = move("a", 0, TaskState.FAILED, error={"type": "X", "message": "", "traceback": None})
    assert backend.transition([done, late]) == [True, False]
    assert backend.transition([move("a", 1, TaskState.RUNNING)]) == [False]
    got = backend.get("a")
    assert got is not None
    assert (got.state, got.result, got.worker, got.error) == (
        TaskState.SUCCEEDED,
        {"ok": True},
        "w1",
        None,
    )


def test_transition_from_older_attempt_is_ignored(backend: ResultBackend) -> None:
    backend.create([record("a")])
    assert backend.transition([move("a", 1, TaskState.RUNNING)]) == [True]
    assert backend.transition([move("a", 0, TaskState.FAILED)]) == [False]
    got = backend.get("a")
    assert got is not None and (got.state, got.attempt) == (TaskState.RUNNING, 1)


def start(task_id: str, attempt: int, receipt: str) -> Transition:
    return Transition(task_id=task_id, attempt=attempt, state=TaskState.RUNNING, receipt=receipt)


def finish(task_id: str, attempt: int, receipt: str, result: object) -> Transition:
    return Transition(
        task_id=task_id,
        attempt=attempt,
        state=TaskState.SUCCEEDED,
        changes={"result": result},
        receipt=receipt,
    )


def test_stale_owner_of_the_same_attempt_is_fenced_out(backend: ResultBackend) -> None:
    backend.create([record("a")])
    assert backend.transition([start("a", 0, "first")]) == [True]
    # The first delivery's lease lapsed (its worker paused); a second delivery took over.
    assert backend.transition([start("a", 0, "second")]) == [True]
    assert backend.transition([finish("a", 0, "first", "stale")]) == [False]
    assert backend.transition([finish("a", 0, "second", "fresh")]) == [True]
    got = backend.get("a")
    assert got is not None and (got.state, got.result) == (TaskState.SUCCEEDED, "fresh")


def test_starts_are_counted_per_attempt_and_capped(backend: ResultBackend) -> None:
    backend.create([record("a")])
    for n in range(MAX_STARTS):
        assert backend.transition([start("a", 0, f"d{n}")]) == [True]
    again = start("a", 0, f"d{MAX_STARTS - 1}")
    assert backend.transition([again]) == [True]  # the same start written again
    assert backend.transition([start("a", 0, "one-too-many")]) == [False]
    got = backend.get("a")
    assert got is not None and (got.starts, got.receipt) == (MAX_STARTS, f"d{MAX_STARTS - 1}")
    retry = move("a", 0, TaskState.RETRIED)
    assert backend.transition([dataclasses.replace(retry, receipt=got.receipt)]) == [True]
    assert backend.transition([start("a", 1, "next-attempt")]) == [True]
    got = backend.get("a")
    assert got is not None and (got.attempt, got.starts) == (1, 1)


def test_success_after_a_retry_keeps_the_old_error_in_meta_only(backend: ResultBackend) -> None:
    error = {"type": "ValueError", "message": "flaky", "traceback": "tb"}
    backend.create([record("a")])
    backend.transition([start("a", 0, "d0"), move("a", 0, TaskState.RETRIED, error=error)])
    backend.transition([start("a", 1, "d1"), finish("a", 1, "d1", 42)])
    got = backend.get("a")
    assert got is not None
    assert (got.state, got.result, got.error) == (TaskState.SUCCEEDED, 42, None)
    assert got.meta["attempts"] == [{"attempt": 0, "error": error}]


def test_transition_merges_meta(backend: ResultBackend) -> None:
    backend.create([record("a", meta={"keep": 1, "over": "old"})])
    backend.transition([move("a", 0, TaskState.RUNNING, meta={"over": "new", "add": True})])
    got = backend.get("a")
    assert got is not None and got.meta == {"keep": 1, "over": "new", "add": True}


def test_transition_of_missing_record_creates_nothing(backend: ResultBackend) -> None:
    assert backend.transition([move("ghost", 0, TaskState.RUNNING)]) == [False]
    assert backend.get("ghost") is None


def test_batch_transition_reports_each_change(backend: ResultBackend) -> None:
    backend.create([record("a"), record("b", state=TaskState.CANCELLED)])
    changes = [move("a", 0, TaskState.RUNNING), move("b", 0, TaskState.RUNNING)]
    assert backend.transition(changes) == [True, False]


def test_replace_resets_a_terminal_record(backend: ResultBackend) -> None:
    backend.create([record("a", state=TaskState.FAILED, attempt=3)])
    backend.replace(record("a", meta={"replayed": 1}))
    got = backend.get("a")
    assert got is not None and (got.state, got.attempt) == (TaskState.QUEUED, 0)
    assert backend.transition([move("a", 0, TaskState.RUNNING)]) == [True]
    backend.replace(record("new"))
    assert backend.get("new") is not None


def test_set_progress_is_fenced(backend: ResultBackend) -> None:
    backend.create([record("a")])
    backend.transition([move("a", 1, TaskState.RUNNING)])
    assert backend.set_progress("a", 1, 0.25, {"stage": "render"}) is True
    assert backend.set_progress("a", 0, 0.9, {"stage": "stale"}) is False
    got = backend.get("a")
    assert got is not None
    assert (got.state, got.progress, got.progress_meta) == (
        TaskState.RUNNING,
        0.25,
        {"stage": "render"},
    )
    backend.transition([move("a", 1, TaskState.SUCCEEDED)])
    assert backend.set_progress("a", 1, 1.0, {}) is False
    assert backend.set_progress("ghost", 0, 0.5, {}) is False


def test_expired_record_is_gone(backend: ResultBackend, clock: ManualClock) -> None:
    now = clock.now()
    backend.create([record("short", expires_at=now + 10), record("long", expires_at=now + 100)])
    backend.create([record("forever")])
    clock.advance(10)
    assert backend.get("short") is not None
    clock.advance(1)
    assert backend.get("short") is None
    assert backend.transition([move("short", 0, TaskState.RUNNING)]) == [False]
    assert backend.purge_expired(clock.now()) == 1
    assert backend.get("long") is not None and backend.get("forever") is not None
    assert backend.create([record("short", queue="again")]) == [True]


def test_expired_id_may_be_created_again(backend: ResultBackend, clock: ManualClock) -> None:
    backend.create([record("a", state=TaskState.SUCCEEDED, expires_at=clock.now() + 1)])
    clock.advance(2)
    assert backend.create([record("a")]) == [True]
    got = backend.get("a")
    assert got is not None and got.state == TaskState.QUEUED


def test_worker_heartbeats_expire(backend: ResultBackend, clock: ManualClock) -> None:
    telemetry = require(backend, Telemetry)
    active = ActiveTask(id="t1", task="math.add", queue="default", attempt=0, started_at=5.0)
    w2 = Heartbeat(id="w2", host="h", pid=2, queues=("default",), active=(active,))
    telemetry.put_worker(w2, ttl_s=30)
    telemetry.put_worker(Heartbeat(id="w1", host="h", pid=1), ttl_s=10)
    workers = telemetry.workers()
    assert [w.id for w in workers] == ["w1", "w2"]
    assert workers[1] == dataclasses.replace(w2, last_heartbeat=clock.now())
    clock.advance(11)
    assert [w.id for w in telemetry.workers()] == ["w2"]
    telemetry.put_worker(Heartbeat(id="w1", host="h", pid=1), ttl_s=10)
    assert telemetry.workers()[0].last_heartbeat == clock.now()
    backend.remove_worker("w1")
    assert [w.id for w in telemetry.workers()] == ["w2"]


def test_delete(backend: ResultBackend) -> None:
    backend.create([record("a"), record("b"), record("c")])
    backend.delete(["a", "c", "missing"])
    assert [backend.get(x) is not None for x in "abc"] == [False, True, False]


def test_values_that_are_not_json_are_refused(backend: ResultBackend) -> None:
    with pytest.raises(BackendError, match="bad"):
        backend.create([record("bad", args={"when": object()})])
    assert backend.get("bad") is None
    backend.create([record("a")])
    with pytest.raises(BackendError):
        backend.transition([move("a", 0, TaskState.SUCCEEDED, result={1, 2})])
    got = backend.get("a")
    assert got is not None and got.state == TaskState.QUEUED


def test_racing_terminal_writes_first_wins(backend_opener: Callable[[], ResultBackend]) -> None:
    handles = [backend_opener(), backend_opener()]
    handles[0].create([record(f"t{i}") for i in range(100)])
    outcome: dict[int, list[bool]] = {}
    start = threading.Barrier(2)

    def finish(index: int) -> None:
        state = (TaskState.SUCCEEDED, TaskState.FAILED)[index]
        start.wait()
        outcome[index] = handles[index].transition(
            [move(f"t{i}", 0, state, worker=str(index)) for i in range(100)]
        )

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(100):
        assert outcome[0][i] != outcome[1][i]
        got = handles[0].get(f"t{i}")
        winner = 0 if outcome[0][i] else 1
        assert got is not None and got.worker == str(winner)
