"""Row <-> value mapping shared by the SQL brokers (SQLite and Postgres use the same columns)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from stemrun.brokers.base import DeadLetter, Delivery


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A leased message row: (seq, id, queue, body, priority, receipt, deliveries)."""
    _seq, task_id, queue, body, priority, receipt, deliveries = row
    return Delivery(
        id=task_id,
        queue=queue,
        body=bytes(body),
        priority=priority,
        receipt=receipt,
        deliveries=deliveries,
    )


def dead_letter_params(entry: DeadLetter, *, priority: int, error: str | None) -> dict[str, Any]:
    """Named query parameters that insert `entry` (priority kept so a replay restores it)."""
    return {
        "id": entry.id,
        "queue": entry.queue,
        "priority": priority,
        "body": entry.body,
        "reason": entry.reason,
        "task": entry.task,
        "attempt": entry.attempt,
        "dead_at": entry.dead_at,
        "error": error,
    }


def dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    """A dead-letter row: (id, queue, body, reason, task, attempt, dead_at, error JSON)."""
    task_id, queue, body, reason, task, attempt, dead_at, error = row
    return DeadLetter(
        id=task_id,
        queue=queue,
        body=bytes(body),
        reason=reason,
        task=task,
        attempt=attempt,
        dead_at=dead_at,
        error=None if error is None else json.loads(error),
    )
