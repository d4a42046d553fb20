"""What a worker tells the world: one log line per task event, and its heartbeat record."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from stemrun.telemetry import ActiveTask, Heartbeat
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
