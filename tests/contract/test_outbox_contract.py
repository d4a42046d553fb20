"""The outbox contract, run against every backend: messages kept beside their new records."""

from __future__ import annotations

from stemrun.backends.base import Outbox, ResultBackend
from stemrun.backends.record import StatusRecord
from stemrun.clock import ManualClock
from stemrun.state import TaskState
from stemrun.store_base import require


def record(task_id: str) -> StatusRecord:
    return StatusRecord(id=task_id, task="email.send", state=TaskState.QUEUED, queue="default")


def test_messages_are_kept_for_new_records_only(backend: ResultBackend) -> None:
    outbox = require(backend, Outbox)
    backend.create([record("old")])
    created = outbox.create_pending([record("old"), record("new")], [b"m-old", b"m-new"])
    assert created == [False, True]
    assert backend.get("new") is not None
    claimed = outbox.claim_pending(before=backend.clock.now() + 1, now=0.0, limit=10)
    assert claimed == {"new": b"m-new"}


def test_claims_take_the_oldest_and_restamp_them(
    backend: ResultBackend, clock: ManualClock
) -> None:
    outbox = require(backend, Outbox)
    for n in range(3):
        outbox.create_pending([record(f"t{n}")], [f"m{n}\n\x00".encode()])
        clock.advance(1.0)
    now = clock.now()
    assert outbox.claim_pending(before=now - 2.5, now=now, limit=10) == {"t0": b"m0\n\x00"}
    # t0 is restamped `now`: another sweeper with a later horizon does not take it again.
    assert outbox.claim_pending(before=now - 1.5, now=now, limit=10) == {"t1": b"m1\n\x00"}
    assert list(outbox.claim_pending(before=now + 1, now=now, limit=1)) == ["t2"]


def test_cleared_messages_are_gone(backend: ResultBackend, clock: ManualClock) -> None:
    outbox = require(backend, Outbox)
    outbox.create_pending([record("a"), record("b")], [b"ma", b"mb"])
    outbox.clear_pending(["a", "missing"])
    clock.advance(1.0)
    assert outbox.claim_pending(before=clock.now(), now=clock.now(), limit=10) == {"b": b"mb"}
