"""Flow control in the worker: paused queues, the rate-limit gate before start, unique release.

Rate limits: right before a delivery would start, the worker reserves one start slot under every
limiter that applies (its task's and its queue's, keyed by the rendered key when the limit has
one) in one atomic store call. A slot that is due starts now. A slot at most `HOLD_S` away waits
in this worker, holding its lease and a pool slot, and starts at the slot. A later slot goes
back to the broker, unchanged but for its delivery metadata: same attempt, due `LEAD_S` before
the slot, carrying the slot (stemrun.flow.with_slot); when it comes back it waits for that slot
without reserving another. A delay is never a failure and never counts as an attempt.

The bound (N + 1 starts in any window of one period) is about when handlers really begin, so a
slot is only honoured within one interval of it (`_Reserved.late`): a start later than that could
share a window with the starts of the slots after it. A slot missed by that much (a waiter no
pool slot was free for, a carried slot no worker took in time, a reservation that a slow store
call made stale) is given up and a fresh one reserved. Each reservation reads the clock just
before its store call, and the decision to start reads it again after. The pool counts a slot as
free only when a task handed to it starts at once (a process-pool child that has booted and
imported its handlers), so a start the gate lets through is not held up in the pool.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stemrun.backends.base import FlowControl
from stemrun.clock import Clock
from stemrun.config.model import Config
from stemrun.envelope import Envelope
from stemrun.errors import BackendError, UsageError
from stemrun.flow import carried_slot, parse_rate, render_key, unique_key, with_slot
from stemrun.worker import settle
from stemrun.worker.lease import Held, Leases

log = logging.getLogger("stemrun.worker")

#: How often the paused queues are read from the result backend (pause takes effect within it).
PAUSE_REFRESH_S = 0.5
#: A rate slot at most this far off is waited for in the worker; a later one goes to the broker.
HOLD_S = 1.0
#: A delivery handed back for a later slot is due this long before it, then waits in a worker.
LEAD_S = 0.5
#: Terminal settlements that release the task's unique key.
_TERMINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Limit:
    """One rate limit of a task or queue: limiter key prefix, optional key template, spacing."""

    prefix: str
    template: str | None
    interval_s: float

    def key(self, envelope: Envelope) -> str:
        """The limiter key of this envelope (a missing header renders empty)."""
        if self.template is None:
            return self.prefix
        rendered = render_key(
            self.template,
            task=envelope.task,
            args=envelope.args,
            headers=envelope.headers,
            strict=False,
        )
        return f"{self.prefix}:{rendered}"


def limits_of(config: Config) -> tuple[dict[str, Limit], dict[str, Limit]]:
    """The rate limits of every task and queue that has one. Raises UsageError for a bad rate."""
    tasks = {
        name: Limit(f"task:{name}", t.rate_limit_key, parse_rate(t.rate_limit).interval_s)
        for name, t in config.tasks.items()
        if t.rate_limit
    }
    queues = {
        name: Limit(f"queue:{name}", q.rate_limit_key, parse_rate(q.rate_limit).interval_s)
        for name, q in config.queues.items()
        if q.rate_limit
    }
    return tasks, queues


@dataclass(frozen=True, slots=True)
class _Reserved:
    """A delivery's start slot, and how late it may start: its shortest limiter's interval."""

    slot: float
    interval_s: float

    def late(self, now: float) -> bool:
        """Missed: starting now could put N + 2 starts in one window with later slots."""
        return now - self.slot >= self.interval_s


@dataclass(slots=True)
class _Waiter:
    reserved: _Reserved
    held: Held

    @property
    def slot(self) -> float:
        return self.reserved.slot


class FlowGate:
    """The worker's side of pause, rate limits and unique keys (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        backend: FlowControl,
        clock: Clock,
        leases: Leases,
        buffer: deque[str],
    ) -> None:
        """Raises UsageError for a rate limit that does not parse."""
        self._config = config
        self._backend = backend
        self._clock = clock
        self._leases = leases
        self._buffer = buffer
        self._task_limits, self._queue_limits = limits_of(config)
        self._paused: frozenset[str] = frozenset()
        self._paused_next = 0.0  # monotonic
        self._waiters: list[_Waiter] = []

    # -- pause ----------------------------------------------------------------------------------

    def queues(self, wanted: Sequence[str]) -> list[str]:
        """The queues of `wanted` not paused, by a view at most PAUSE_REFRESH_S old."""
        now = time.monotonic()
        if now >= self._paused_next:
            self._paused_next = now + PAUSE_REFRESH_S
            self._refresh_paused()
        return [queue for queue in wanted if queue not in self._paused]

    def _refresh_paused(self) -> None:
        try:
            fresh = frozenset(self._backend.paused_queues())
        except BackendError as exc:
            # Keep the last view: a store hiccup must not resume (or pause) every queue.
            log.warning("could not read the paused queues: %s", exc)
            return
        if fresh != self._paused:
            log.info("paused queues: %s", ", ".join(sorted(fresh)) or "none")
        self._paused = fresh

    # -- rate limits ----------------------------------------------------------------------------

    def room(self, free_slots: int) -> int:
        """Free pool slots not promised to a delivery waiting for its rate slot."""
        return max(0, free_slots - len(self._waiters))

    def gate(
        self, free_slots: int, take: Callable[[int], list[Held]]
    ) -> tuple[list[Held], list[settle.Settlement]]:
        """Which deliveries start now, and the ones handed back to the broker for later.

        Due waiters start first (within `free_slots`); `take(n)` pops up to n more from the
        buffer, which then pass the rate-limit gate. Raises BackendError after putting those
        back in the buffer.
        """
        start = self._due(self._clock.now(), free_slots)
        candidates = take(self.room(free_slots - len(start)))
        try:
            started, later = self._admit(candidates)
        except BackendError:
            # Not lost: they go back to the buffer and pass the gate again (a new slot).
            self._buffer.extendleft(reversed([held.delivery.receipt for held in start]))
            raise
        return start + started, later

    def wait(self, wait_s: float) -> float:
        """The loop's wait, shortened so the next waiting delivery starts on its slot."""
        if not self._waiters:
            return wait_s
        until = min(waiter.slot for waiter in self._waiters) - self._clock.now()
        return max(0.0, min(wait_s, until))

    def _admit(self, candidates: list[Held]) -> tuple[list[Held], list[settle.Settlement]]:
        try:
            slots = [self._slot(held) for held in candidates]
        except BackendError:
            self._buffer.extendleft(reversed([held.delivery.receipt for held in candidates]))
            raise
        now = self._clock.now()  # after the store calls: a slot they made stale shows as late
        start: list[Held] = []
        later: list[settle.Settlement] = []
        missed: list[str] = []
        for held, reserved in zip(candidates, slots, strict=True):
            if reserved is None:
                start.append(held)
            elif reserved.late(now):
                missed.append(self._missed(held, reserved, now))
            elif reserved.slot <= now:
                start.append(held)
            elif reserved.slot - now <= HOLD_S:
                self._waiters.append(_Waiter(reserved, held))
            else:
                later.append(self._hand_back(held, reserved.slot, now))
        self._buffer.extendleft(reversed(missed))  # first in line for a fresh slot next round
        return start, later

    def _missed(self, held: Held, reserved: _Reserved, now: float) -> str:
        """Give a missed slot up (it only lowers the rate); the receipt, to reserve again."""
        log.debug(
            "task %s (%s) missed its rate slot by %.3fs; reserving another",
            held.envelope.task,
            held.envelope.id,
            now - reserved.slot,
        )
        return held.delivery.receipt

    def release(self) -> list[str]:
        """Stop waiting (shutdown): the receipts of the waiting deliveries, to hand back."""
        receipts = [waiter.held.delivery.receipt for waiter in self._waiters]
        self._waiters = []
        return receipts

    def _limits(self, envelope: Envelope) -> dict[str, float]:
        found = (self._task_limits.get(envelope.task), self._queue_limits.get(envelope.queue))
        return {limit.key(envelope): limit.interval_s for limit in found if limit is not None}

    def _slot(self, held: Held) -> _Reserved | None:
        """The start slot of a delivery (None when no limit applies); reserves one if needed."""
        limits = self._limits(held.envelope)
        if not limits:
            return None
        interval_s = min(limits.values())
        now = self._clock.now()  # just before the call, not once per batch: never a stale slot
        carried = carried_slot(held.delivery.body, held.envelope)
        if carried is not None and not _Reserved(carried, interval_s).late(now):
            return _Reserved(carried, interval_s)
        return _Reserved(self._backend.reserve_rate_slot(limits, now), interval_s)

    def _due(self, now: float, free_slots: int) -> list[Held]:
        """Waiters whose slot has come, as many as the pool has room for.

        A process pool replacing a child has a slot fewer for a moment: the rest start later,
        or, once they have missed their slot, go back to the buffer for a fresh one.
        """
        self._waiters.sort(key=lambda waiter: waiter.slot)
        start: list[Held] = []
        again: list[str] = []
        waiting: list[_Waiter] = []
        for waiter in self._waiters:
            held = waiter.held
            if waiter.slot > now:
                waiting.append(waiter)
            elif held.lost or held.delivery.receipt not in self._leases.held:
                continue
            elif held.envelope.expires_at is not None and held.envelope.expires_at <= now:
                again.append(held.delivery.receipt)  # the buffer cancels it
            elif waiter.reserved.late(now):
                again.append(self._missed(held, waiter.reserved, now))
            elif len(start) < free_slots:
                start.append(held)
            else:
                waiting.append(waiter)
        self._waiters = waiting
        self._buffer.extendleft(reversed(again))
        return start

    def _hand_back(self, held: Held, slot: float, now: float) -> settle.Settlement:
        self._leases.drop(held.delivery.receipt)
        envelope = held.envelope
        eta = max(now, slot - LEAD_S)
        return settle.Settlement(
            delivery=held.delivery,
            action="requeue",
            event="delayed",
            body=with_slot(held.delivery.body, attempt=envelope.attempt, eta=eta, slot=slot),
            eta=eta,
            task=envelope.task,
            attempt=envelope.attempt,
            detail=f"by its rate limit: starts in {slot - now:.3f}s",
        )

    # -- unique keys ----------------------------------------------------------------------------

    def settled(self, batch: Sequence[settle.Settlement]) -> None:
        """Release the unique keys of tasks this batch made terminal (their state is durable).

        A failed release is logged: the key then lapses by its TTL, or the next enqueue of the
        key takes it over once it sees the holder finished.
        """
        for item in batch:
            envelope = item.envelope
            if envelope is None or item.event not in _TERMINAL_EVENTS:
                continue
            task = self._config.tasks.get(envelope.task)
            if task is None or task.unique is None:
                continue
            try:
                self._backend.release_unique(unique_key(task.unique, envelope), envelope.id)
            except (BackendError, UsageError) as exc:
                log.warning("could not release the unique key of task %s: %s", envelope.id, exc)
