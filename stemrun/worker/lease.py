"""The deliveries a worker holds (buffered or running) and their leases.

A delivery is fetched with a 30 s lease, extended at once to its task's `visibility_timeout`
when that differs, and renewed every third of it for as long as it is held, including while a
long task runs. A renewal the broker refuses means another worker took the message over: the
local copy is marked lost and its outcome is dropped (its writes would be fenced anyway).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stemrun.brokers.base import Broker, Delivery
from stemrun.clock import Clock
from stemrun.config.model import Config, TaskConfig
from stemrun.envelope import Envelope
from stemrun.worker.job import Job

FETCH_LEASE_S = 30.0


@dataclass(slots=True, kw_only=True)
class Held:
    """One leased delivery this worker holds."""

    delivery: Delivery
    envelope: Envelope
    task: TaskConfig
    lease_s: float = FETCH_LEASE_S
    renew_at: float = 0.0  # monotonic
    started_at: float | None = None  # epoch seconds, once started
    lost: bool = False

    def job(self) -> Job:
        """The pool job running this delivery's attempt, keyed by its receipt."""
        envelope, task = self.envelope, self.task
        return Job(
            key=self.delivery.receipt,
            id=envelope.id,
            task=envelope.task,
            attempt=envelope.attempt,
            queue=envelope.queue,
            args=envelope.args,
            headers=envelope.headers,
            parent_id=envelope.parent_id,
            root_id=envelope.root_id,
            soft_limit_s=task.soft_time_limit_s,
            hard_limit_s=task.hard_time_limit_s,
        )


class Leases:
    """Held deliveries by receipt, with lease renewal."""

    def __init__(self, broker: Broker, clock: Clock) -> None:
        self._broker = broker
        self._clock = clock
        self.held: dict[str, Held] = {}

    def adopt(self, items: Iterable[Held]) -> None:
        """Hold freshly fetched deliveries, moving their leases to their tasks' timeouts."""
        by_lease: dict[float, list[Held]] = defaultdict(list)
        for held in items:
            self.held[held.delivery.receipt] = held
            by_lease[held.task.visibility_timeout_s].append(held)
        for lease_s, group in by_lease.items():
            if lease_s != FETCH_LEASE_S:
                self._extend(group, lease_s)
            else:
                self._schedule(group, lease_s)

    def drop(self, key: str) -> Held | None:
        """Stop holding a delivery (settled, released or lost before it started)."""
        return self.held.pop(key, None)

    def extend_now(self, key: str) -> None:
        """Renew one lease now (ctx.heartbeat())."""
        held = self.held.get(key)
        if held is not None and not held.lost:
            self._extend([held], held.lease_s)

    def renew_due(self) -> list[Held]:
        """Renew every lease due for renewal; returns those newly found lost."""
        now = time.monotonic()
        by_lease: dict[float, list[Held]] = defaultdict(list)
        for held in self.held.values():
            if not held.lost and held.renew_at <= now:
                by_lease[held.lease_s].append(held)
        lost: list[Held] = []
        for lease_s, group in by_lease.items():
            lost.extend(self._extend(group, lease_s))
        return lost

    def _extend(self, group: Sequence[Held], lease_s: float) -> list[Held]:
        results = self._broker.extend([held.delivery for held in group], lease_s)
        self._schedule(group, lease_s)
        lost = [held for held, ok in zip(group, results, strict=True) if not ok]
        for held in lost:
            held.lost = True
        return lost

    @staticmethod
    def _schedule(group: Iterable[Held], lease_s: float) -> None:
        renew_at = time.monotonic() + lease_s / 3.0
        for held in group:
            held.lease_s = lease_s
            held.renew_at = renew_at

    @staticmethod
    def heartbeat_interval(config: Config, queues: Sequence[str]) -> float:
        """A third of the shortest visibility timeout among the tasks of these queues."""
        timeouts = [t.visibility_timeout_s for t in config.tasks.values() if t.queue in queues]
        return min([FETCH_LEASE_S, *timeouts]) / 3.0
