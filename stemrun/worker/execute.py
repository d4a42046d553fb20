"""Run one attempt of a handler and describe how it ended, as plain JSON-ready data.

Sync handlers are called directly; `async def` handlers run with `asyncio.run` (or are awaited
on the async pool's loop). The outcome never holds live objects, so a pool child can send it to
the parent over a pipe.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from stemrun.context import TaskContext
from stemrun.errors import Retry, SoftTimeLimitExceeded, TaskCancelled
from stemrun.registry import Handler

Status = Literal["succeeded", "failed", "retry", "cancelled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one attempt ended."""

    status: Status
    result: Any = None
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}
    exc_types: tuple[str, ...] = ()  # the error's class and its bases, most specific first
    countdown_s: float | None = None  # ctx.retry(countdown=...)
    eta: float | None = None  # ctx.retry(eta=...)
    runtime_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the pool pipe)."""
        return {
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "exc_types": list(self.exc_types),
            "countdown_s": self.countdown_s,
            "eta": self.eta,
            "runtime_s": self.runtime_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        """Rebuild from `to_dict()` output."""
        return cls(
            status=data["status"],
            result=data.get("result"),
            error=data.get("error"),
            exc_types=tuple(data.get("exc_types") or ()),
            countdown_s=data.get("countdown_s"),
            eta=data.get("eta"),
            runtime_s=float(data.get("runtime_s") or 0.0),
        )


def failure(
    type_name: str, message: str, *, exc_types: tuple[str, ...] = (), tb: str = ""
) -> Outcome:
    """A failed outcome that did not come from a raised exception (hard limit, lost child)."""
    error = {"type": type_name, "message": message, "traceback": tb}
    return Outcome(status="failed", error=error, exc_types=exc_types or (type_name,))


def error_of(exc: BaseException) -> dict[str, Any]:
    """`{"type", "message", "traceback"}` of an exception."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": str(exc), "traceback": tb}


def exc_names(exc: BaseException) -> tuple[str, ...]:
    """The class names of an exception's MRO, most specific first (without `object`)."""
    return tuple(cls.__name__ for cls in type(exc).__mro__ if cls is not object)


def _failed(exc: BaseException) -> Outcome:
    return Outcome(status="failed", error=error_of(exc), exc_types=exc_names(exc))


def _retry(request: Retry) -> Outcome:
    cause = request.exc
    error = error_of(cause) if cause else {"type": "Retry", "message": "retry requested"}
    error.setdefault("traceback", "")
    return Outcome(
        status="retry",
        error=error,
        exc_types=exc_names(cause) if cause else ("Retry",),
        countdown_s=request.countdown_s,
        eta=request.eta,
    )


class SoftLimit:
    """The soft-time-limit switch of one attempt.

    Whoever runs the handler arms it with a way to interrupt exactly that handler (raise in its
    thread, cancel its coroutine); the pool fires it when the limit passes. Firing before arming
    interrupts as soon as it is armed; firing after disarming does nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._target: Callable[[], object] | None = None
        self.fired = False

    def arm(self, target: Callable[[], object]) -> None:
        with self._lock:
            self._target = target
            if self.fired:
                target()

    def disarm(self) -> None:
        with self._lock:
            self._target = None

    def fire(self) -> None:
        with self._lock:
            if self.fired:
                return
            self.fired = True
            if self._target is not None:
                self._target()


def wants_context(handler: Handler) -> bool:
    """Whether the handler's first parameter is annotated `TaskContext` or named `ctx`."""
    try:
        return _wants_context_cached(handler)
    except TypeError:  # an unhashable callable
        return _wants_context(handler)


@functools.lru_cache(maxsize=1024)
def _wants_context_cached(handler: Handler) -> bool:
    return _wants_context(handler)


def _wants_context(handler: Handler) -> bool:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    first = params[0]
    if first.name == "ctx":
        return True
    annotation = first.annotation
    if isinstance(annotation, str):
        # `from __future__ import annotations` leaves "TaskContext" or "stemrun.TaskContext"
        return annotation.strip("'\" ").rsplit(".", 1)[-1] == "TaskContext"
    return isinstance(annotation, type) and issubclass(annotation, TaskContext)


def _start(handler: Handler, ctx: TaskContext, args: Mapping[str, Any]) -> Any:
    if wants_context(handler):
        return handler(ctx, **args)
    return handler(**args)


def _success(task: str, value: Any) -> Outcome:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"task {task!r} returned a {type(value).__name__} that is not JSON-serialisable "
            f"({exc}); return dicts, lists, strings, numbers, booleans or None"
        ) from exc
    return Outcome(status="succeeded", result=value)


def execute(
    load: Callable[[], Handler],
    ctx: TaskContext,
    args: Mapping[str, Any],
    soft: SoftLimit,
    interrupt_sync: Callable[[], object] | None = None,
) -> Outcome:
    """Run one attempt to completion in this thread and return its outcome.

    `interrupt_sync` interrupts this thread for the soft limit while a sync handler runs; async
    handlers run on a fresh event loop and are cancelled instead. Never raises for anything the
    handler does (except WorkerShutdown and interpreter exits).
    """
    started = time.perf_counter()
    try:
        handler = load()
        if interrupt_sync is not None:
            soft.arm(interrupt_sync)
        try:
            value = _start(handler, ctx, args)
        finally:
            soft.disarm()
        if inspect.isawaitable(value):
            import asyncio  # here: a process running only sync handlers never loads it

            value = asyncio.run(_await_cancellable(value, soft))
        outcome = _success(ctx.task, value)
    except Retry as request:
        outcome = _retry(request)
    except TaskCancelled as exc:
        outcome = Outcome(status="cancelled", error=error_of(exc), exc_types=exc_names(exc))
    except (Exception, SoftTimeLimitExceeded) as exc:  # the task boundary: any error is an outcome
        outcome = _failed(exc)
    return _timed(outcome, started)


async def execute_async(
    load: Callable[[], Handler], ctx: TaskContext, args: Mapping[str, Any], soft: SoftLimit
) -> Outcome:
    """Run one attempt of an async handler on the running loop (the async pool).

    The caller runs sync handlers through `execute` in a thread instead.
    """
    started = time.perf_counter()
    try:
        value = _start(load(), ctx, args)
        if inspect.isawaitable(value):
            value = await _await_cancellable(value, soft)
        outcome = _success(ctx.task, value)
    except Retry as request:
        outcome = _retry(request)
    except TaskCancelled as exc:
        outcome = Outcome(status="cancelled", error=error_of(exc), exc_types=exc_names(exc))
    except (Exception, SoftTimeLimitExceeded) as exc:  # the task boundary
        outcome = _failed(exc)
    return _timed(outcome, started)


async def _await_cancellable(awaitable: Any, soft: SoftLimit) -> Any:
    """Await the handler's coroutine as a task the soft limit can cancel.

    A cancellation that escapes the handler after the soft limit fired becomes
    SoftTimeLimitExceeded; a handler that catches it and returns has succeeded.
    """
    import asyncio  # already loaded: this runs on an event loop

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(awaitable)
    soft.arm(lambda: loop.call_soon_threadsafe(task.cancel))
    try:
        return await task
    except asyncio.CancelledError:
        if soft.fired and not _current_cancelling():
            raise SoftTimeLimitExceeded("soft time limit exceeded") from None
        raise
    finally:
        soft.disarm()


def _current_cancelling() -> bool:
    import asyncio  # already loaded: this runs on an event loop

    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _timed(outcome: Outcome, started: float) -> Outcome:
    return replace(outcome, runtime_s=time.perf_counter() - started)
