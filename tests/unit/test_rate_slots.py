"""A rate slot is honoured only within one interval of it: later, it is given up and reserved again.

The bound (N + 1 starts in any window of one period, docs/flow-control.md) holds at the moment
handlers begin only if no start is later than one interval after its slot. These run the gate on
a memory backend with a manual clock; a slow store is the memory backend with a call that moves
the clock on, as a lock wait on a busy SQLite file does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path

import pytest

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import Delivery
from stemrun.brokers.memory import MemoryBroker
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.envelope import Envelope, encode
from stemrun.worker.flow import FlowGate
from stemrun.worker.lease import Held, Leases

INTERVAL_S = 0.5  # 2/s


class SlowStore(MemoryBackend):
    """A memory backend whose rate reservations take `delay_s` of the clock's time."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.manual = clock
        self.delay_s = 0.0
        self.asked_at: list[float] = []

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        self.asked_at.append(now)
        self.manual.advance(self.delay_s)
        return super().reserve_rate_slot(limits, now)


class Gate:
    def __init__(self, root: Path) -> None:
        self.config = config_from_mapping(
            {
                "broker": "memory://",
                "queues": {"default": {}},
                "tasks": {"slow": {"handler": "x:s", "rate_limit": "2/s"}},
            },
            root_dir=root,
        )
        self.clock = ManualClock()
        self.store = SlowStore(self.clock)
        self.leases = Leases(MemoryBroker(clock=self.clock), self.clock)
        self.buffer: deque[str] = deque()
        self.flow = FlowGate(self.config, self.store, self.clock, self.leases, self.buffer)
        self.count = 0

    def enqueue(self, count: int) -> None:
        """`count` deliveries of the limited task, fetched into the buffer."""
        for _ in range(count):
            self.count += 1
            envelope = Envelope(id=f"id{self.count}", task="slow", queue="default")
            delivery = Delivery(
                id=envelope.id,
                queue="default",
                body=encode(envelope),
                priority=0,
                receipt=f"r{self.count}",
                deliveries=1,
            )
            self.leases.held[delivery.receipt] = Held(
                delivery=delivery, envelope=envelope, task=self.config.tasks["slow"]
            )
            self.buffer.append(delivery.receipt)

    def round(self, free: int = 8) -> list[str]:
        """One gate round taking from the buffer; the ids it starts now."""

        def take(room: int) -> list[Held]:
            taken = [self.buffer.popleft() for _ in range(min(room, len(self.buffer)))]
            return [self.leases.held[receipt] for receipt in taken]

        start, later = self.flow.gate(free, take)
        assert later == []
        return [held.envelope.id for held in start]


@pytest.fixture
def rig(tmp_path: Path) -> Gate:
    return Gate(tmp_path)


def test_a_waiter_without_a_pool_slot_for_a_whole_interval_gets_a_fresh_slot(rig: Gate) -> None:
    rig.enqueue(2)
    assert rig.round() == ["id1"]  # id2 waits in the worker for its slot, an interval away
    rig.clock.advance(INTERVAL_S)
    assert rig.round(free=0) == []  # due, but no room in the pool (a child being replaced)
    rig.clock.advance(INTERVAL_S)
    rig.enqueue(1)
    # On its old slot, a whole interval late, id2 would start together with id3.
    assert rig.round(free=2) == ["id2"]
    assert rig.round(free=1) == []
    rig.clock.advance(INTERVAL_S)
    assert rig.round(free=1) == ["id3"]


def test_a_slot_a_slow_store_call_made_stale_is_not_started_late(rig: Gate) -> None:
    rig.store.delay_s = INTERVAL_S  # the reservation itself takes a whole interval
    rig.enqueue(1)
    assert rig.round() == []  # its slot (the time it asked) has passed by an interval
    rig.store.delay_s = 0.0
    assert rig.round() == ["id1"]


def test_each_reservation_of_a_batch_reads_the_clock_just_before_its_call(rig: Gate) -> None:
    t0 = rig.clock.now()
    rig.store.delay_s = 0.1
    rig.enqueue(3)
    assert rig.round() == ["id1"]
    asked = [at - t0 for at in rig.store.asked_at]
    assert asked == pytest.approx([0.0, 0.1, 0.2])
