"""The worker's flow control on a memory backend with a manual clock: gate, waiters, pause."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import Delivery
from stemrun.brokers.memory import MemoryBroker
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.envelope import Envelope, decode, encode
from stemrun.errors import BackendError
from stemrun.flow import carried_slot
from stemrun.worker import flow as worker_flow
from stemrun.worker.flow import HOLD_S, LEAD_S, FlowGate
from stemrun.worker.lease import Held, Leases
from stemrun.worker.settle import Settlement


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_from_mapping(
        {
            "broker": "memory://",
            "queues": {"default": {}, "bulk": {"rate_limit": "1/s"}},
            "tasks": {
                "slow": {"handler": "x:s", "rate_limit": "2/s"},
                "tenant": {
                    "handler": "x:t",
                    "rate_limit": {"rate": "1/m", "key": "{headers.tenant}"},
                },
                "free": {"handler": "x:f", "queue": "bulk"},
                "report": {"handler": "x:r", "unique": {"key": "{args.user}"}},
            },
        },
        root_dir=tmp_path,
    )


class Rig:
    def __init__(self, config: Config) -> None:
        self.clock = ManualClock()
        self.config = config
        self.backend = MemoryBackend(clock=self.clock)
        self.leases = Leases(MemoryBroker(clock=self.clock), self.clock)
        self.buffer: deque[str] = deque()
        self.flow = FlowGate(config, self.backend, self.clock, self.leases, self.buffer)
        self.count = 0

    def held(self, task: str, raw: bytes | None = None, **headers: str) -> Held:
        self.count += 1
        spec = self.config.tasks[task]
        if raw is None:
            envelope = Envelope(id=f"id{self.count}", task=task, queue=spec.queue, headers=headers)
            raw = encode(envelope)
        envelope = decode(raw)
        delivery = Delivery(
            id=envelope.id,
            queue=envelope.queue,
            body=raw,
            priority=0,
            receipt=f"r{self.count}",
            deliveries=1,
        )
        item = Held(delivery=delivery, envelope=envelope, task=spec)
        self.leases.held[delivery.receipt] = item
        return item


@pytest.fixture
def rig(config: Config) -> Rig:
    return Rig(config)


def ids(items: list[Held]) -> list[str]:
    return [item.envelope.id for item in items]


def gate(rig: Rig, items: list[Held], free: int = 8) -> tuple[list[Held], list[Settlement]]:
    """One round of the gate with `free` pool slots, offering `items` from the buffer."""

    def take(room: int) -> list[Held]:
        assert room >= len(items), "the test offers more than the room"
        return items

    return rig.flow.gate(free, take)


def test_unlimited_tasks_start_at_once(rig: Rig) -> None:
    items = [rig.held("report"), rig.held("report")]
    start, later = gate(rig, items)
    assert ids(start) == ids(items) and later == []


def test_near_slots_wait_in_the_worker_and_start_on_time(rig: Rig) -> None:
    items = [rig.held("slow") for _ in range(3)]  # 2/s: slots at +0, +0.5, +1.0
    start, later = gate(rig, items)
    assert ids(start) == ["id1"] and later == []
    assert rig.flow.room(4) == 2  # two pool slots are promised to the waiters
    assert rig.flow.wait(0.05) == pytest.approx(0.05)
    rig.clock.advance(0.4)
    assert rig.flow.wait(0.5) == pytest.approx(0.1)
    assert gate(rig, []) == ([], [])
    rig.clock.advance(0.1)
    assert ids(gate(rig, [])[0]) == ["id2"]
    rig.clock.advance(0.5)
    assert ids(gate(rig, [])[0]) == ["id3"]
    assert rig.flow.room(4) == 4


def test_far_slots_go_back_to_the_broker_carrying_their_slot(rig: Rig) -> None:
    items = [rig.held("slow") for _ in range(4)]  # slot of the fourth: +1.5
    now = rig.clock.now()
    _, later = gate(rig, items)
    [back] = later
    assert isinstance(back, Settlement) and back.action == "requeue" and back.event == "delayed"
    assert back.eta == pytest.approx(now + 1.5 - LEAD_S)
    assert back.delivery.receipt not in rig.leases.held
    assert back.body is not None
    # It comes back early, waits for its own slot and reserves nothing more.
    rig.clock.advance(1.5 - LEAD_S)
    gate(rig, [])  # the first three start meanwhile
    returned = rig.held("slow", raw=back.body)
    assert returned.envelope.attempt == 0
    assert carried_slot(back.body, returned.envelope) == pytest.approx(now + 1.5)
    assert gate(rig, [returned]) == ([], [])
    rig.clock.advance(LEAD_S)
    assert ids(gate(rig, [])[0]) == [returned.envelope.id]
    assert rig.backend.reserve_rate_slot({"task:slow": 0.5}, rig.clock.now()) == pytest.approx(
        now + 2.0
    )


def test_a_slot_missed_by_a_whole_interval_is_reserved_again(rig: Rig) -> None:
    items = [rig.held("slow") for _ in range(4)]
    now = rig.clock.now()
    _, [back] = gate(rig, items)
    rig.flow.release()
    rig.clock.advance(1.5 + 0.5)  # nobody took it in time: it would bunch with later starts
    assert back.body is not None
    start, later = gate(rig, [rig.held("slow", raw=back.body)])
    assert start != [] and later == []  # the limiter is idle by now: a fresh slot, now
    assert rig.backend.reserve_rate_slot({"task:slow": 0.5}, now) == pytest.approx(now + 2.5)


def test_keyed_limits_are_per_header_value(rig: Rig) -> None:
    a1, b1, a2 = rig.held("tenant", tenant="a"), rig.held("tenant", tenant="b"), None
    start, _ = gate(rig, [a1, b1])
    assert ids(start) == ids([a1, b1])
    a2 = rig.held("tenant", tenant="a")
    start, later = gate(rig, [a2])
    assert start == [] and later[0].delivery.id == a2.envelope.id  # a's next slot is a minute off


def test_queue_limits_apply_to_every_task_of_the_queue(rig: Rig) -> None:
    start, later = gate(rig, [rig.held("free"), rig.held("free")])
    assert len(start) == 1 and later == []
    assert rig.flow.room(1) == 0


def test_shutdown_hands_waiters_back(rig: Rig) -> None:
    gate(rig, [rig.held("slow") for _ in range(2)])
    assert rig.flow.release() == ["r2"]
    assert rig.flow.room(1) == 1


def test_paused_queues_are_skipped_after_the_cache_refresh(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(worker_flow.time, "monotonic", lambda: now[0])
    assert rig.flow.queues(["default", "bulk"]) == ["default", "bulk"]
    rig.backend.set_paused("bulk", True)
    assert rig.flow.queues(["default", "bulk"]) == ["default", "bulk"]  # cached
    now[0] += worker_flow.PAUSE_REFRESH_S
    assert rig.flow.queues(["default", "bulk"]) == ["default"]
    rig.backend.set_paused("bulk", False)
    now[0] += worker_flow.PAUSE_REFRESH_S
    assert rig.flow.queues(["default", "bulk"]) == ["default", "bulk"]


def test_terminal_settlements_release_the_unique_key(rig: Rig) -> None:
    now = rig.clock.now()
    envelope = Envelope(id="u1", task="report", queue="default", args={"user": 7})
    rig.backend.claim_unique("report:7", "u1", 60, now)
    item = rig.held("report", raw=encode(envelope))
    retried = Settlement(delivery=item.delivery, action="requeue", event="retried")
    rig.flow.settled([retried])
    assert rig.backend.claim_unique("report:7", "u2", 60, now) == "u1"
    done = Settlement(delivery=item.delivery, action="ack", event="succeeded", envelope=envelope)
    rig.flow.settled([done])
    assert rig.backend.claim_unique("report:7", "u2", 60, now) is None


def test_hold_is_longer_than_the_lead() -> None:
    # A handed-back delivery must come back close enough to its slot to wait in a worker.
    assert HOLD_S >= LEAD_S


def test_due_waiters_start_only_within_the_free_pool_slots(rig: Rig) -> None:
    gate(rig, [rig.held("slow") for _ in range(3)])  # id1 now, id2 +0.5, id3 +1.0
    rig.clock.advance(1.0)  # a process pool child is being replaced: no free slot
    assert gate(rig, [], free=0) == ([], [])
    assert list(rig.buffer) == ["r2"]  # id2 missed its slot by a whole interval: reserve again
    rig.clock.advance(0.1)
    start, _ = gate(rig, [], free=1)
    assert ids(start) == ["id3"]  # 0.1 s late: within its interval


def test_a_store_error_puts_every_delivery_back_in_the_buffer(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate(rig, [rig.held("slow") for _ in range(2)])  # id2 waits for +0.5
    rig.clock.advance(0.5)

    def down(limits: object, now: float) -> float:
        raise BackendError("store down")

    monkeypatch.setattr(rig.backend, "reserve_rate_slot", down)
    with pytest.raises(BackendError):
        gate(rig, [rig.held("slow")])
    assert list(rig.buffer) == ["r2", "r3"]
