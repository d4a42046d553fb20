"""TaskContext: what a running handler knows about its task, and what it may ask of the worker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stemrun.errors import Retry


class ContextBridge(Protocol):
    """The worker side of one running attempt; the pool that runs it provides one."""

    def progress(self, fraction: float | None, meta: Mapping[str, Any]) -> None: ...

    def heartbeat(self) -> None: ...

    def enqueue(
        self, task: str, args: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> str: ...


class DetachedBridge:
    """A bridge for a context used outside a worker (tests): records calls, enqueues nothing."""

    def __init__(self) -> None:
        self.progress_calls: list[tuple[float | None, dict[str, Any]]] = []
        self.heartbeats = 0

    def progress(self, fraction: float | None, meta: Mapping[str, Any]) -> None:
        self.progress_calls.append((fraction, dict(meta)))

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def enqueue(self, task: str, args: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
        raise RuntimeError(f"cannot enqueue {task!r}: this TaskContext is not inside a worker")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskContext:
    """The running attempt of one task, passed first to handlers that ask for it.

    A handler asks for it by annotating its first parameter `TaskContext` or naming it `ctx`.
    """

    id: str
    task: str
    attempt: int  # 0-based
    queue: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    root_id: str | None = None
    bridge: ContextBridge = field(default_factory=DetachedBridge, repr=False, compare=False)

    def progress(self, fraction: float | None = None, **meta: Any) -> None:
        """Record progress (0..1 or None) and JSON metadata, visible to `stemrun status`.

        Raises ValueError for a fraction outside 0..1.
        """
        if fraction is not None:
            fraction = float(fraction)
            if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
                raise ValueError(f"progress fraction must be between 0 and 1, got {fraction}")
        self.bridge.progress(fraction, meta)

    def heartbeat(self) -> None:
        """Extend this task's lease now (it is also renewed automatically while it runs)."""
        self.bridge.heartbeat()

    def retry(
        self,
        countdown: float | None = None,
        eta: float | None = None,
        exc: BaseException | None = None,
    ) -> Retry:
        """Schedule another attempt after `countdown` seconds (or at epoch `eta`).

        Without either, the task's retry backoff decides the delay. Counts against max_retries;
        when the budget is spent the attempt fails (with `exc` as its error when given).
        Always raises `stemrun.errors.Retry`; the return annotation lets `raise ctx.retry()` read
        naturally.
        """
        raise Retry(countdown_s=countdown, eta=eta, exc=exc)

    def enqueue(self, task: str, args: Mapping[str, Any] | None = None, **options: Any) -> str:
        """Enqueue a child task (same options as `Stem.enqueue`); returns its id.

        Its `parent_id` is this task and its `root_id` this task's root (or this task).
        """
        options.setdefault("parent_id", self.id)
        options.setdefault("root_id", self.root_id or self.id)
        return self.bridge.enqueue(task, args, options)
