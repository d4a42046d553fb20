"""Count what a worker starts and settles, and add it to the store's counters once per batch.

Counts accumulate in memory and go to the result backend in one `incr_counters` call at most
every FLUSH_EVERY_S (never one per task: a busy worker would pay a store round trip per loop
iteration); a failed write keeps them for the next try. A worker killed with SIGKILL loses at
most the counts of that last half second; a clean stop flushes everything.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from stemrun.backends.base import Telemetry
from stemrun.state import TaskState
from stemrun.telemetry import BUCKET, DURATION_US, bucket_of, counter_name
from stemrun.worker.execute import Outcome
from stemrun.worker.lease import Held
from stemrun.worker.settle import Settlement

FLUSH_EVERY_S = 0.5

_EVENTS = {"succeeded": "succeeded", "retried": "retried", "cancelled": "cancelled"}


class Recorder:
    """Task counters of one worker not yet written to the store."""

    def __init__(self, store: Telemetry) -> None:
        self._store = store
        self._pending: Counter[str] = Counter()
        self._next_flush = 0.0

    def started(self, task: str, queue: str) -> None:
        """An attempt was handed to the pool."""
        self._pending[counter_name("started", task, queue)] += 1

    def ran(self, held: Held, outcome: Outcome, now: float) -> None:
        """An attempt ended; its run time goes to the duration histogram."""
        task, queue = held.envelope.task, held.delivery.queue
        # A hard-limited or lost attempt has no measured run time: the wall time stands in.
        seconds = outcome.runtime_s or max(0.0, now - (held.started_at or now))
        self._pending[counter_name(BUCKET, task, queue, bucket_of(seconds))] += 1
        self._pending[counter_name(DURATION_US, task, queue)] += round(seconds * 1e6)

    def settled(self, batch: Sequence[Settlement]) -> None:
        """A batch of settlements was written: count their outcomes."""
        for item in batch:
            queue = item.delivery.queue
            kind = _EVENTS.get(item.event)
            if kind is not None:
                self._pending[counter_name(kind, item.task, queue)] += 1
            if item.transition is not None and item.transition.state == TaskState.FAILED:
                self._pending[counter_name("failed", item.task, queue)] += 1
            if item.action == "dead_letter":
                self._pending[counter_name("dead_lettered", item.task, queue)] += 1

    def flush(self, *, force: bool = False) -> None:
        """Add the pending counts to the store in one call, when due (or forced).

        Raises BackendError; the counts are kept for the next try.
        """
        now = time.monotonic()
        if not self._pending or (not force and now < self._next_flush):
            return
        self._next_flush = now + FLUSH_EVERY_S
        increments = dict(self._pending)
        self._store.incr_counters(increments)
        self._pending.subtract(increments)
        self._pending = +self._pending  # drop the zeros
