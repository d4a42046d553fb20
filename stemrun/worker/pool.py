"""The pool contract shared by the process, thread and async pools, and their time-limit logic.

What each pool can enforce (the docs copy this):

process (default)
    soft: the child arms SIGALRM when it starts the attempt and `SoftTimeLimitExceeded` is raised
    in the running sync handler, so its `except`/`finally` cleanup runs; a handler that catches
    it and returns normally has succeeded.
    hard: the child is killed (SIGKILL) with every process the task started (its process group)
    and replaced by a fresh one; the attempt fails with `HardTimeLimitExceeded` and the normal
    retry rules apply.
thread
    soft: `SoftTimeLimitExceeded` is raised asynchronously in the handler's thread
    (`PyThreadState_SetAsyncExc`). It lands only while the thread runs Python bytecode: a handler
    blocked in C (a socket read, `time.sleep`, a lock, a C extension) sees it only when that call
    returns.
    hard: a thread cannot be killed. The attempt fails with `HardTimeLimitExceeded` (retry rules
    apply), a new thread takes the slot, and the abandoned thread runs on until its handler
    returns; its late result is ignored.
async
    soft: the handler's coroutine is cancelled: `asyncio.CancelledError` is raised at its current
    `await` (cleanup in `finally` runs); if the cancellation escapes the handler the attempt fails
    with `SoftTimeLimitExceeded`, if the handler swallows it and returns, it succeeded. A coroutine
    that blocks the loop without awaiting cannot be interrupted (nor can anything else on the loop
    run meanwhile).
    hard: the coroutine is cancelled and abandoned: the attempt fails with
    `HardTimeLimitExceeded`, its slot is freed at once and a late result is ignored.

Async handlers on the process and thread pools run on a fresh event loop per attempt and get the
async behaviour for the soft limit. Sync handlers on the async pool run in threads and get the
thread behaviour. With every pool the worker keeps serving other tasks after a hard limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from stemrun.worker.execute import Outcome, SoftLimit, failure
from stemrun.worker.job import Job

HARD_LIMIT_ERROR = "HardTimeLimitExceeded"


class Pool(Protocol):
    """Runs jobs concurrently and reports each outcome exactly once as a `Done` event."""

    def start(self) -> None: ...

    def free_slots(self) -> int: ...

    def running(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def maintain(self) -> None:
        """Enforce time limits and replace lost workers; called often by the consumer loop."""

    def cancel(self, key: str) -> None:
        """Make the attempt's next ctx.progress()/heartbeat() raise TaskCancelled."""

    def close(self, *, graceful: bool) -> None: ...


@dataclass(slots=True)
class Running:
    """A job a pool is running, with its time-limit bookkeeping (monotonic clock)."""

    job: Job
    started: float = field(default_factory=time.monotonic)
    soft: SoftLimit = field(default_factory=SoftLimit)
    hard_fired: bool = False
    thread_ident: int | None = None  # the thread running it (thread pool)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def soft_due(self, now: float) -> bool:
        limit = self.job.soft_limit_s
        return limit is not None and not self.soft.fired and now - self.started >= limit

    def hard_due(self, now: float) -> bool:
        limit = self.job.hard_limit_s
        return limit is not None and not self.hard_fired and now - self.started >= limit


def hard_limit_outcome(job: Job) -> Outcome:
    """The failed outcome of an attempt stopped by its hard time limit."""
    return failure(
        HARD_LIMIT_ERROR,
        f"task {job.task!r} ({job.id}) exceeded its hard time limit of {job.hard_limit_s}s",
    )
