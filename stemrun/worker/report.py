"""What a worker tells the world: one log line per task event, and its heartbeat record."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

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


def heartbeat_info(
    plan: Plan,
    held: Iterable[Held],
    *,
    processed: int,
    failed: int,
    started_at: float,
    now: float | None = None,
) -> dict[str, Any]:
    """The record `stemrun observe workers` shows for this worker."""
    now = time.time() if now is None else now
    active = [
        {
            "id": h.envelope.id,
            "task": h.envelope.task,
            "queue": h.delivery.queue,
            "attempt": h.envelope.attempt,
            "started_at": h.started_at,
            "runtime_s": round(now - h.started_at, 3),
        }
        for h in held
        if h.started_at is not None
    ]
    return {
        "id": plan.name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "group": plan.group,
        "queues": list(plan.queues),
        "concurrency": plan.concurrency,
        "pool": plan.pool,
        "active": active,
        "processed": processed,
        "failed": failed,
        "started_at": started_at,
    }
