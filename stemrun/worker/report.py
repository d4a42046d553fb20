"""What a worker tells the world: one log line per task event, and its heartbeat."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from stemrun.backends.base import Telemetry
from stemrun.telemetry import BUSY_BEAT_S, ActiveTask, Heartbeat, heartbeat_ttl
from stemrun.worker.lease import Held
from stemrun.worker.plan import Plan

log = logging.getLogger("stemrun.worker")

_WARNINGS = frozenset({"failed", "dead-lettered"})


def task_event(
    event: str,
    *,
    task: str | None,
    task_id: str,
    attempt: int,
    queue: str,
    worker: str,
    detail: str = "",
) -> None:
    """Log `task <event> [detail]` with the task fields (see stemrun.logs)."""
    level = logging.WARNING if event in _WARNINGS else logging.INFO
    if not log.isEnabledFor(level):
        return
    extra = {"task": task, "task_id": task_id, "attempt": attempt, "queue": queue, "worker": worker}
    log.log(level, "task %s%s", event, f" {detail}" if detail else "", extra=extra)


def held_event(event: str, held: Held, *, worker: str) -> None:
    """Log `task <event>` for a delivery the worker holds (received, started)."""
    envelope = held.envelope
    task_event(
        event,
        task=envelope.task,
        task_id=envelope.id,
        attempt=envelope.attempt,
        queue=held.delivery.queue,
        worker=worker,
    )


def heartbeat(
    plan: Plan,
    held: Iterable[Held],
    *,
    processed: int,
    failed: int,
    started_at: float,
    interval_s: float,
) -> Heartbeat:
    """The record `stemrun observe workers` shows for this worker."""
    active = tuple(
        ActiveTask(
            id=h.envelope.id,
            task=h.envelope.task,
            queue=h.delivery.queue,
            attempt=h.envelope.attempt,
            started_at=h.started_at,
        )
        for h in held
        if h.started_at is not None
    )
    return Heartbeat(
        id=plan.name,
        host=socket.gethostname(),
        pid=os.getpid(),
        group=plan.group,
        queues=tuple(plan.queues),
        concurrency=plan.concurrency,
        pool=plan.pool,
        active=active,
        processed=processed,
        failed=failed,
        started_at=started_at,
        heartbeat_interval_s=interval_s,
    )


class Pulse:
    """When the worker writes its heartbeat next, and the write."""

    def __init__(self, plan: Plan, telemetry: Telemetry, *, interval_s: float) -> None:
        self._plan = plan
        self._telemetry = telemetry
        self._interval_s = interval_s
        self._started_at = 0.0
        self._next = 0.0

    def start(self, now: float) -> None:
        """The worker starts consuming: its heartbeat shows it running since `now`."""
        self._started_at = now

    def soon(self, now: float) -> None:
        """Beat within BUSY_BEAT_S, so tasks just started show in `observe workers` soon."""
        self._next = min(self._next, now + BUSY_BEAT_S)

    def beat(self, now: float, held: Iterable[Held], *, processed: int, failed: int) -> None:
        """Write the heartbeat when it is due. Raises BackendError."""
        if now < self._next:
            return
        self._next = now + self._interval_s
        record = heartbeat(
            self._plan,
            held,
            processed=processed,
            failed=failed,
            started_at=self._started_at,
            interval_s=self._interval_s,
        )
        # kept past staleness (3 intervals) so `observe workers` can show the worker as stale
        self._telemetry.put_worker(record, ttl_s=heartbeat_ttl(self._interval_s))
