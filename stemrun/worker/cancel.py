"""Cooperative cancellation of running attempts (`stemrun cancel` on a running task).

`stemrun cancel` flags the running task's status record (`meta.cancel_requested_at`). A handler
can only be interrupted where it calls back into stemrun (`ctx.progress()`, `ctx.heartbeat()`),
so the worker reads the records of the attempts that did call back, in one batched read at most
every `POLL_S`, and asks the pool to cancel the flagged ones: the next ctx call raises
`TaskCancelled` inside the handler and the attempt ends `cancelled`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from stemrun.backends.base import ResultBackend
from stemrun.backends.record import CANCEL_REQUESTED, StatusRecord
from stemrun.worker.lease import Held

#: Longest pause between two reads of the records of attempts that called back.
POLL_S = 0.5


class CancelWatch:
    """Which running attempts were asked to stop; keyed by delivery receipt."""

    def __init__(self, backend: ResultBackend) -> None:
        self._backend = backend
        self._touched: set[str] = set()
        self._asked: set[str] = set()
        self._next_poll = 0.0

    def touched(self, key: str) -> None:
        """The attempt under `key` called ctx.progress/heartbeat: worth a look."""
        if key not in self._asked:
            self._touched.add(key)

    def due(self, held: Mapping[str, Held]) -> list[str]:
        """Receipts of running attempts to cancel now (each reported once). Raises BackendError."""
        self._asked &= held.keys()
        now = time.monotonic()
        if not self._touched or now < self._next_poll:
            return []
        self._next_poll = now + POLL_S
        running = {
            held[key].envelope.id: key
            for key in self._touched
            if key in held and held[key].started_at is not None and not held[key].lost
        }
        self._touched.clear()
        if not running:
            return []
        records = self._backend.get_many(list(running))
        flagged = [key for task_id, key in running.items() if _flagged(records.get(task_id))]
        self._asked.update(flagged)
        return flagged


def _flagged(record: StatusRecord | None) -> bool:
    return record is not None and CANCEL_REQUESTED in record.meta
