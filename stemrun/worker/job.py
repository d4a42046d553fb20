"""What the consumer hands a pool (a Job) and what pools report back (events)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stemrun.context import ContextBridge, TaskContext
from stemrun.errors import TaskCancelled
from stemrun.worker.execute import Outcome

#: Enqueues a child task: (task, args, options) -> id.
EnqueueFn = Callable[[str, Mapping[str, Any] | None, dict[str, Any]], str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One attempt to run, keyed by the delivery's receipt (unique per lease)."""

    key: str
    id: str
    task: str
    attempt: int
    queue: str
    args: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    root_id: str | None = None
    soft_limit_s: float | None = None
    hard_limit_s: float | None = None

    def to_frame(self) -> dict[str, Any]:
        return {
            "op": "run",
            "key": self.key,
            "id": self.id,
            "task": self.task,
            "attempt": self.attempt,
            "queue": self.queue,
            "args": self.args,
            "headers": self.headers,
            "parent_id": self.parent_id,
            "root_id": self.root_id,
            "soft_limit_s": self.soft_limit_s,
        }

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Job:
        names = ("key", "id", "task", "attempt", "queue", "args", "headers", "parent_id")
        return cls(
            **{name: frame[name] for name in names},
            root_id=frame.get("root_id"),
            soft_limit_s=frame.get("soft_limit_s"),
        )

    def context(self, bridge: ContextBridge) -> TaskContext:
        return TaskContext(
            id=self.id,
            task=self.task,
            attempt=self.attempt,
            queue=self.queue,
            headers=self.headers,
            parent_id=self.parent_id,
            root_id=self.root_id,
            bridge=bridge,
        )


@dataclass(frozen=True, slots=True)
class Done:
    """An attempt ended (or was ended by a hard limit / a lost child)."""

    key: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Progress:
    """`ctx.progress(...)` of a running attempt."""

    key: str
    fraction: float | None
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Beat:
    """`ctx.heartbeat()` of a running attempt: extend its lease now."""

    key: str


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to do but look at the worker's flags again (stop requested)."""


Event = Done | Progress | Beat | Wake
Emit = Callable[[Event], None]


class EventBridge:
    """ContextBridge for attempts running inside the worker process (thread and async pools)."""

    def __init__(
        self,
        key: str,
        emit: Emit,
        enqueue: EnqueueFn,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._key = key
        self._emit = emit
        self._enqueue = enqueue
        self._cancelled = cancelled

    def progress(self, fraction: float | None, meta: Mapping[str, Any]) -> None:
        self._check_cancelled()
        self._emit(Progress(self._key, fraction, dict(meta)))

    def heartbeat(self) -> None:
        self._check_cancelled()
        self._emit(Beat(self._key))

    def _check_cancelled(self) -> None:
        """Raises TaskCancelled once `stemrun cancel` reached this attempt."""
        if self._cancelled is not None and self._cancelled():
            raise TaskCancelled("cancelled by stemrun cancel")

    def enqueue(self, task: str, args: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
        return self._enqueue(task, args, options)
