"""Status records: the stored outcome of a task, and the fenced changes every backend applies.

Writes are fenced: a transition is ignored once the record is terminal or when it comes from an
older attempt than the one recorded, so the first terminal result wins and a stale owner's late
write changes nothing. Every result backend applies the same rules through these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stemrun.state import TERMINAL, TaskState


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
    """

    task_id: str
    attempt: int
    state: TaskState
    changes: Mapping[str, Any] = field(default_factory=dict)


def apply_transition(record: StatusRecord, change: Transition) -> StatusRecord | None:
    """The record after `change`, or None when fencing rejects it. Shared by every backend."""
    if record.state in TERMINAL or change.attempt < record.attempt:
        return None
    values = dict(change.changes)
    if "meta" in values:
        values["meta"] = {**record.meta, **values["meta"]}
    return dataclasses.replace(record, state=change.state, attempt=change.attempt, **values)


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
