"""What the thread and async pools share: slots, running attempts, time limits, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable

from stemrun.registry import Handler
from stemrun.worker.execute import Outcome
from stemrun.worker.job import Done, Emit, EnqueueFn
from stemrun.worker.pool import Running, hard_limit_outcome

Loader = Callable[[str], Handler]


class InProcessPool:
    """Bookkeeping for pools that run handlers inside the worker process.

    Subclasses start attempts and call `_finish` with each outcome; `maintain` fires soft limits
    and abandons attempts past their hard limit (a thread or coroutine cannot be killed: its
    late result is ignored).
    """

    def __init__(self, concurrency: int, load: Loader, emit: Emit, enqueue: EnqueueFn) -> None:
        self._concurrency = concurrency
        self._load = load
        self._emit = emit
        self._enqueue = enqueue
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._busy = 0
        self._cancelled: set[str] = set()  # keys whose next ctx call raises TaskCancelled

    def free_slots(self) -> int:
        with self._lock:
            return self._concurrency - self._busy

    def running(self) -> int:
        with self._lock:
            return self._busy

    def cancel(self, key: str) -> None:
        with self._lock:
            if key in self._running:
                self._cancelled.add(key)

    def maintain(self) -> None:
        now = Running.now()
        with self._lock:
            entries = list(self._running.values())
        for entry in entries:
            if entry.soft_due(now):
                entry.soft.fire()
            if entry.hard_due(now):
                self._abandon(entry)

    def _finish(self, key: str, outcome: Outcome) -> None:
        self._cancelled.discard(key)
        with self._lock:
            entry = self._running.pop(key, None)
            if entry is None or entry.hard_fired:
                return  # abandoned by its hard limit: the late result is ignored
            self._busy -= 1
        self._emit(Done(key, outcome))

    def _abandon(self, entry: Running) -> None:
        with self._lock:
            if entry.job.key not in self._running or entry.hard_fired:
                return
            entry.hard_fired = True
            self._busy -= 1
            self._abandoned(entry)
        entry.soft.fire()
        self._emit(Done(entry.job.key, hard_limit_outcome(entry.job)))
        self._replace_abandoned()

    def _abandoned(self, entry: Running) -> None:
        """Hook, under the lock: note what the abandoned attempt runs on."""

    def _replace_abandoned(self) -> None:
        """Hook: give the freed slot a fresh runner if the pool needs one."""
