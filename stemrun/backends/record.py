"""Status records: the stored outcome of a task, and the fenced changes every backend applies.

Writes are fenced, by attempt and by delivery. A transition is ignored once the record is
terminal, when it comes from an older attempt than the one recorded, and, while the attempt is
running, when it comes from another delivery than the one that started it last: a worker whose
lease was taken over (paused past it, then resumed) changes nothing, even with the same attempt.
A delivery that starts an attempt already running takes it over and counts one more start; past
`MAX_STARTS` the start is refused, and the worker dead-letters the poison message. Every result
backend applies the same rules through these functions (see docs/guarantees.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stemrun.state import TERMINAL, TaskState

#: Starts of one attempt, each ended by its worker's death, after which the attempt is a poison
#: message: the next delivery is dead-lettered with reason max-deliveries-exceeded.
MAX_STARTS = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRecord:
    """The stored outcome of one task (the fields `stemrun status --json` shows)."""

    id: str
    task: str
    state: TaskState
    queue: str
    attempt: int = 0
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}
    progress: float | None = None
    progress_meta: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    dead_letter_reason: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    expires_at: float | None = None  # when the stored record may be dropped (result TTL)
    receipt: str | None = None  # the delivery that last started the attempt (fences writes)
    starts: int = 0  # how many deliveries started this attempt

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field."""
        data = dataclasses.asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatusRecord:
        """Rebuild a record from `to_dict()` output (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["state"] = TaskState(values["state"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A fenced change of one record: new state, the attempt making it, and fields to set.

    `changes` keys are StatusRecord field names; `meta` is merged key by key, the rest replaced.
    `receipt` is the delivery making the change (None: not fenced by delivery).
    """

    task_id: str
    attempt: int
    state: TaskState
    changes: Mapping[str, Any] = field(default_factory=dict)
    receipt: str | None = None


def apply_transition(record: StatusRecord, change: Transition) -> StatusRecord | None:
    """The record after `change`, or None when fencing rejects it. Shared by every backend."""
    if record.state in TERMINAL or change.attempt < record.attempt:
        return None
    running = record.state == TaskState.RUNNING and change.attempt == record.attempt
    values = dict(change.changes)
    if change.state == TaskState.RUNNING and change.receipt is not None:  # a delivery starts it
        if running and change.receipt == record.receipt:
            return record  # the same start written again
        starts = record.starts + 1 if running else 1
        if starts > MAX_STARTS:
            return None
        values.update(receipt=change.receipt, starts=starts)
    elif running and change.receipt is not None and change.receipt != record.receipt:
        return None  # a stale owner: another delivery took the attempt over
    if change.state == TaskState.SUCCEEDED:
        values["error"] = None  # an earlier attempt's error stays in meta.attempts only
    meta = {**record.meta, **values.get("meta", {})}
    if change.state == TaskState.RETRIED:
        meta["attempts"] = _with_attempt(record.meta, change.attempt, values.get("error"))
    values["meta"] = meta
    return dataclasses.replace(record, state=change.state, attempt=change.attempt, **values)


def _with_attempt(meta: Mapping[str, Any], attempt: int, error: Any) -> list[dict[str, Any]]:
    """`meta.attempts` with this attempt's error (written again, it replaces itself)."""
    earlier = [entry for entry in meta.get("attempts", []) if entry.get("attempt") != attempt]
    return [*earlier, {"attempt": attempt, "error": error}]


def is_poison(record: StatusRecord | None, attempt: int) -> bool:
    """Whether `attempt` was started `MAX_STARTS` times, each ended by its worker's death."""
    return (
        record is not None
        and record.state == TaskState.RUNNING
        and record.attempt == attempt
        and record.starts >= MAX_STARTS
    )


#: `meta` key set on a running task's record by `stemrun cancel`; its worker interrupts it.
CANCEL_REQUESTED = "cancel_requested_at"


def cancel_change(
    record: StatusRecord, now: float, result_ttl_s: float | None = None
) -> StatusRecord | None:
    """The record after a cancel request, or None when nothing changes (already terminal).

    Queued or retried (waiting): `cancelled` at once, `meta.reason = "cancelled"`, so no worker
    ever runs it. Running: flagged with `meta.cancel_requested_at`; its worker interrupts the
    handler at its next ctx call.
    """
    if record.state in TERMINAL:
        return None
    if record.state == TaskState.RUNNING:
        return dataclasses.replace(record, meta={**record.meta, CANCEL_REQUESTED: now})
    return dataclasses.replace(
        record,
        state=TaskState.CANCELLED,
        finished_at=now,
        meta={**record.meta, "reason": "cancelled"},
        expires_at=None if result_ttl_s is None else now + result_ttl_s,
    )
