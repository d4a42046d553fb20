"""What the dashboard's pages show and do, over one `Stem`: no web types here.

Every call reads or writes the shared stores under one lock, so request threads never use a
store connection at the same time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from stemrun.backends.base import RecordListing
from stemrun.backends.record import CANCEL_REQUESTED, StatusRecord
from stemrun.brokers.base import DeadLetter
from stemrun.client import Stem
from stemrun.dashboard.throughput import Sampler, chart
from stemrun.errors import BackendError, UsageError
from stemrun.observe import metric_totals, queue_views, schedule_views, worker_views
from stemrun.schedules.apply import set_enabled
from stemrun.schedules.store import ScheduleStore
from stemrun.state import TERMINAL, TaskState
from stemrun.store_base import require
from stemrun.stores import schedule_store_for

T = TypeVar("T")

#: Tasks per page of the task list.
PAGE_SIZE = 50
#: Dead letters listed at most per page load.
DEAD_LIMIT = 200
STATES = tuple(str(s) for s in TaskState if s is not TaskState.UNKNOWN)


class Console:
    """The dashboard's access to one deployment: stores, counter samples and a lock."""

    def __init__(self, stem: Stem, schedules: ScheduleStore | None = None) -> None:
        self.stem = stem
        self.sampler = Sampler()
        self._schedules = schedules
        self._lock = threading.Lock()

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    def _schedule_store(self) -> ScheduleStore:
        if self._schedules is None:
            self._schedules = schedule_store_for(self.stem.config)
        return self._schedules

    def close(self) -> None:
        """Close every store connection."""
        with self._lock:
            self.stem.close()
            if self._schedules is not None:
                self._schedules.close()

    def overview(self) -> dict[str, Any]:
        """Queues, workers, outcome totals and the throughput chart; raises StemrunError."""
        now = time.time()
        queues, workers, totals = self._locked(
            lambda: (queue_views(self.stem), worker_views(self.stem, now), metric_totals(self.stem))
        )
        self.sampler.add(now, totals["tasks"])
        for view in workers:
            view["heartbeat_age_s"] = round(max(0.0, now - view["last_heartbeat"]), 1)
        return {
            "queues": queues,
            "workers": workers,
            "totals": totals["tasks"],
            "chart": chart(self.sampler.rates(), now),
        }

    def task_list(
        self, state: str | None, task: str | None, queue: str | None, page: int
    ) -> dict[str, Any]:
        """One page of status records, newest first; `supported` False when the store can't."""
        if state is not None and state not in STATES:
            raise UsageError(f"unknown state {state!r} (one of: {', '.join(STATES)})")
        offset = max(0, page - 1) * PAGE_SIZE
        try:
            listing = require(self.stem.backend, RecordListing)
        except BackendError as exc:
            return {"supported": False, "reason": str(exc), "records": [], "has_next": False}
        found = self._locked(
            lambda: listing.list_records(state, task, queue, PAGE_SIZE + 1, offset)
        )
        rows = [record.to_dict() for record in found[:PAGE_SIZE]]
        return {"supported": True, "records": rows, "has_next": len(found) > PAGE_SIZE}

    def task_detail(self, task_id: str) -> dict[str, Any]:
        """A record with its timeline, canvas members and whether it can be cancelled."""
        record = self._locked(lambda: self.stem.status(task_id))
        canvas = self._locked(lambda: self.stem.canvas.describe(record))
        return {
            "record": record.to_dict(),
            "known": record.state is not TaskState.UNKNOWN,
            "cancellable": record.state not in TERMINAL and record.state is not TaskState.UNKNOWN,
            "timeline": timeline(record),
            "canvas": canvas,
        }

    def cancel(self, task_id: str) -> StatusRecord | None:
        """Cancel (or flag) a task as `stemrun cancel` does; None when unknown."""

        def run() -> StatusRecord | None:
            before = self.stem.status(task_id)
            task = self.stem.config.tasks.get(before.task)
            ttl = task.result_ttl_s if task is not None else self.stem.config.result_ttl_s
            return self.stem.backend.cancel(task_id, self.stem.clock.now(), result_ttl_s=ttl)

        return self._locked(run)

    def dead_letters(self, queue: str | None) -> list[dict[str, Any]]:
        """Dead letters of one queue (or all), oldest first; raises UnknownQueue."""
        entries = self._locked(lambda: self.stem.dead_letters(queue, DEAD_LIMIT))
        return [entry.summary() for entry in entries]

    def select_dead(self, ids: Sequence[str], queue: str | None) -> list[DeadLetter]:
        """The dead letters with these ids, or (no ids) every one of `queue` (None: all)."""
        if not ids:
            return self._locked(lambda: self.stem.dead_letters(queue, DEAD_LIMIT))
        found = self._locked(lambda: [self.stem.dead_letter_admin.dead_letter_get(i) for i in ids])
        return [entry for entry in found if entry is not None]

    def replay(self, entries: Sequence[DeadLetter]) -> list[str]:
        """Re-enqueue dead letters with a fresh retry budget; the ids replayed."""
        return self._locked(lambda: self.stem.replay(entries))

    def purge(self, queue: str | None, ids: Sequence[str] = ()) -> int:
        """Delete the dead letters with these ids, or else of one queue (None: all); how many."""
        if ids:
            return self._locked(lambda: self.stem.purge_dead_letters(task_ids=ids))
        return self._locked(lambda: self.stem.purge_dead_letters(queue))

    def schedules(self) -> list[dict[str, Any]]:
        """Every stored schedule entry with next/last fire, drift and last error."""
        return self._locked(lambda: schedule_views(self._schedule_store(), time.time()))

    def set_schedule(self, name: str, enabled: bool) -> bool:
        """Enable or disable one entry; False when no such entry is stored."""
        store = self._locked(self._schedule_store)
        return self._locked(lambda: set_enabled(store, name, enabled)) is not None


def timeline(record: StatusRecord) -> list[tuple[str, float]]:
    """The record's dated events, oldest first."""
    events = [
        ("created", record.created_at or None),
        ("started", record.started_at),
        ("finished", record.finished_at),
        ("replayed", record.meta.get("replayed_at")),
        ("cancel requested", record.meta.get(CANCEL_REQUESTED)),
    ]
    dated = [(name, float(at)) for name, at in events if isinstance(at, int | float) and at]
    return sorted(dated, key=lambda item: item[1])
