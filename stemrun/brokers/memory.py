"""The in-memory broker: one process only, for tests and embedded use.

It mirrors the SQLite broker's model (ready / delayed / leased messages, receipts fencing
owners) with heaps instead of indexes. Heap items carry the entry's generation so a state change
just pushes a new item and the stale one is skipped when popped.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Unpack

from stemrun.brokers.base import (
    Broker,
    DeadLetter,
    DeadLetterAdmin,
    Delivery,
    Message,
    QueueMonitor,
    QueueStats,
)
from stemrun.store_base import InProcessStore, StoreOptions

_READY, _DELAYED, _LEASED = 0, 1, 2
_MAX_WAIT_S = 0.05


@dataclass(slots=True)
class _Entry:
    seq: int
    id: str
    queue: str
    priority: int
    body: bytes
    state: int
    due_at: float | None  # eta while delayed, lease expiry while leased
    receipt: str | None = None
    deliveries: int = 0
    gen: int = 0


class MemoryBroker(InProcessStore, Broker, DeadLetterAdmin, QueueMonitor):
    """Broker held in this process's memory; thread-safe. Raises nothing store-specific."""

    def __init__(self, url: str = "memory://", **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._cond = threading.Condition(threading.Lock())
        self._seq = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._receipts: dict[str, int] = {}
        self._ready: dict[str, list[tuple[int, int, int]]] = {}
        self._timers: list[tuple[float, int, int]] = []
        # Insertion order is the tie-break for equal dead_at; a replaced id moves to the end.
        self._dead: dict[str, tuple[DeadLetter, int]] = {}

    # -- internal state changes; callers hold self._cond --

    def _place(self, entry: _Entry) -> None:
        entry.gen += 1
        if entry.state == _READY:
            heap = self._ready.setdefault(entry.queue, [])
            heapq.heappush(heap, (-entry.priority, entry.seq, entry.gen))
        else:
            assert entry.due_at is not None
            heapq.heappush(self._timers, (entry.due_at, entry.seq, entry.gen))

    def _add(self, task_id: str, queue: str, priority: int, body: bytes, eta: float | None) -> None:
        delayed = eta is not None and eta > self.clock.now()
        entry = _Entry(
            seq=next(self._seq),
            id=task_id,
            queue=queue,
            priority=priority,
            body=body,
            state=_DELAYED if delayed else _READY,
            due_at=eta if delayed else None,
        )
        self._entries[entry.seq] = entry
        self._place(entry)
        self._cond.notify_all()

    def _promote(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, seq, gen = heapq.heappop(self._timers)
            entry = self._entries.get(seq)
            if entry is not None and entry.gen == gen:
                entry.state, entry.due_at = _READY, None
                self._place(entry)

    def _owned(self, delivery: Delivery) -> _Entry | None:
        entry = self._entries.get(self._receipts.get(delivery.receipt, 0))
        if entry is None or entry.id != delivery.id or entry.receipt != delivery.receipt:
            return None
        return entry

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry.seq]
        if entry.receipt is not None:
            del self._receipts[entry.receipt]

    def _lease_one(self, entry: _Entry, until: float) -> Delivery:
        if entry.receipt is not None:
            del self._receipts[entry.receipt]
        entry.receipt = uuid.uuid4().hex
        self._receipts[entry.receipt] = entry.seq
        entry.state, entry.due_at = _LEASED, until
        entry.deliveries += 1
        self._place(entry)
        return Delivery(
            id=entry.id,
            queue=entry.queue,
            body=entry.body,
            priority=entry.priority,
            receipt=entry.receipt,
            deliveries=entry.deliveries,
        )

    def _lease(self, queues: Sequence[str], limit: int, lease_s: float) -> list[Delivery]:
        now = self.clock.now()
        self._promote(now)
        found: list[Delivery] = []
        for queue in queues:
            heap = self._ready.get(queue, [])
            while heap and len(found) < limit:
                _, seq, gen = heapq.heappop(heap)
                entry = self._entries.get(seq)
                if entry is not None and entry.gen == gen:
                    found.append(self._lease_one(entry, now + lease_s))
        return found

    # -- the Broker contract --

    def publish(self, messages: Sequence[Message]) -> None:
        """Add all messages at once."""
        with self._cond:
            for m in messages:
                self._add(m.id, m.queue, m.priority, m.body, m.eta)

    def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        consumer: str,
        lease_s: float,
        block_s: float = 0.0,
        ack: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Lease up to `limit` due messages (`ack` first), waiting up to `block_s` for one."""
        if ack:
            self.ack(ack)
        deadline = time.monotonic() + block_s
        with self._cond:
            while True:
                found = self._lease(queues, limit, lease_s)
                remaining = deadline - time.monotonic()
                if found or limit <= 0 or remaining <= 0:
                    return found
                if self._timers:
                    # Promotion left only future timers, so this wait is positive.
                    remaining = min(remaining, self._timers[0][0] - self.clock.now())
                # Capped so that a clock that jumps (ManualClock in tests) is noticed soon.
                self._cond.wait(min(max(remaining, 0.001), _MAX_WAIT_S))

    def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[bool]:
        """Renew leases still held under their receipts."""
        result: list[bool] = []
        with self._cond:
            until = self.clock.now() + lease_s
            for delivery in deliveries:
                entry = self._owned(delivery)
                if entry is not None:
                    entry.state, entry.due_at = _LEASED, until
                    self._place(entry)
                result.append(entry is not None)
        return result

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Remove messages still held under their receipts."""
        result: list[bool] = []
        with self._cond:
            for delivery in deliveries:
                entry = self._owned(delivery)
                if entry is not None:
                    self._remove(entry)
                result.append(entry is not None)
        return result

    def requeue(self, delivery: Delivery, body: bytes, eta: float | None) -> bool:
        """Replace a leased message by `body` due at `eta`."""
        with self._cond:
            entry = self._owned(delivery)
            if entry is None:
                return False
            self._remove(entry)
            self._add(entry.id, entry.queue, entry.priority, body, eta)
            return True

    def dead_letter(self, delivery: Delivery, entry: DeadLetter) -> bool:
        """Move a leased message to its queue's dead letters."""
        with self._cond:
            message = self._owned(delivery)
            if message is None:
                return False
            self._remove(message)
            self._dead.pop(entry.id, None)
            self._dead[entry.id] = (entry, message.priority)
            return True

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        with self._cond:
            entries = [e for e, _ in self._dead.values() if queue is None or e.queue == queue]
        entries.sort(key=lambda e: e.dead_at)
        return entries[: max(limit, 0)]

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        """One dead letter by task id."""
        with self._cond:
            found = self._dead.get(task_id)
        return None if found is None else found[0]

    def replay(self, task_id: str, body: bytes, eta: float | None) -> bool:
        """Swap a dead letter for a new message; False if absent."""
        with self._cond:
            found = self._dead.pop(task_id, None)
            if found is None:
                return False
            entry, priority = found
            self._add(task_id, entry.queue, priority, body, eta)
            return True

    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters of one queue or all."""
        with self._cond:
            doomed = [k for k, (e, _) in self._dead.items() if queue is None or e.queue == queue]
            for key in doomed:
                del self._dead[key]
        return len(doomed)

    def delete_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete the dead letters with these ids; how many existed."""
        with self._cond:
            return sum(self._dead.pop(i, None) is not None for i in set(task_ids))

    def stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Pending, delayed, in-flight and dead counts per queue."""
        counts = {q: [0, 0, 0, 0] for q in queues}
        with self._cond:
            now = self.clock.now()
            for e in self._entries.values():
                if e.queue in counts:
                    counts[e.queue][_bucket(e, now)] += 1
            for dead, _ in self._dead.values():
                if dead.queue in counts:
                    counts[dead.queue][3] += 1
        return {
            q: QueueStats(pending=c[0], delayed=c[1], in_flight=c[2], dead=c[3])
            for q, c in counts.items()
        }

    def ping(self) -> None:
        """Always answers: it lives in this process."""

    def close(self) -> None:
        """Nothing to release: the data lives as long as the process (shared instances)."""


def _bucket(entry: _Entry, now: float) -> int:
    """0 pending, 1 delayed, 2 in flight, judged at `now` (timers may not be promoted yet)."""
    if entry.state == _READY or (entry.due_at is not None and entry.due_at <= now):
        return 0
    return entry.state
