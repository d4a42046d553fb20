"""execute: context injection, async handlers, results that are not JSON, Retry, soft limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import stemrun
from stemrun.context import DetachedBridge, TaskContext
from stemrun.errors import SoftTimeLimitExceeded
from stemrun.registry import Handler
from stemrun.worker.execute import Outcome, SoftLimit, execute, wants_context


def make_ctx() -> TaskContext:
    return TaskContext(id="t1", task="demo", attempt=2, queue="default", root_id="r1")


def run(
    handler: Handler, args: dict[str, Any] | None = None, soft: SoftLimit | None = None
) -> Outcome:
    return execute(lambda: handler, make_ctx(), args or {}, soft or SoftLimit())


# Handlers defined under `from __future__ import annotations`: annotations are strings.
def annotated(context: TaskContext, x: int) -> dict[str, Any]:
    return {"id": context.id, "attempt": context.attempt, "x": x}


def annotated_qualified(context: stemrun.TaskContext, x: int) -> int:  # type: ignore[name-defined]
    return x


def named_ctx(ctx, x):  # type: ignore[no-untyped-def]
    return ctx.task


def no_ctx(x: int, y: int = 1) -> int:
    return x + y


def other_first_param(x: int) -> int:
    return x


def test_string_annotation_injects_the_context() -> None:
    outcome = run(annotated, {"x": 5})
    assert outcome.status == "succeeded"
    assert outcome.result == {"id": "t1", "attempt": 2, "x": 5}


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (annotated, True),
        (annotated_qualified, True),
        (named_ctx, True),
        (no_ctx, False),
        (other_first_param, False),
        (lambda ctx: None, True),
        (lambda *args, **kwargs: None, False),
        (print, False),
    ],
)
def test_wants_context(handler: Handler, expected: bool) -> None:
    assert wants_context(handler) is expected


def test_real_class_annotation_injects_the_context() -> None:
    def handler(c: Any) -> str:
        return str(c.queue)

    handler.__annotations__["c"] = TaskContext
    assert run(handler).result == "default"


def test_args_are_keyword_arguments() -> None:
    assert run(no_ctx, {"y": 10, "x": 1}).result == 11


def test_wrong_args_fail_the_attempt_with_type_error() -> None:
    outcome = run(no_ctx, {"z": 1})
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["type"] == "TypeError"


def test_async_handler_runs_to_completion() -> None:
    async def handler(ctx: TaskContext, n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    assert run(handler, {"n": 21}).result == 42


def test_result_that_is_not_json_fails_with_a_clear_type_error() -> None:
    outcome = run(lambda: {"when": object()})
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["type"] == "TypeError"
    assert "not JSON-serialisable" in outcome.error["message"]
    assert "'demo'" in outcome.error["message"]


def test_nan_result_is_not_json() -> None:
    assert run(lambda: float("nan")).status == "failed"


def test_exception_outcome_has_type_message_traceback_and_mro() -> None:
    def handler() -> None:
        raise ConnectionRefusedError("db down")

    outcome = run(handler)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["type"] == "ConnectionRefusedError"
    assert outcome.error["message"] == "db down"
    assert "Traceback" in outcome.error["traceback"] and "db down" in outcome.error["traceback"]
    assert outcome.exc_types[:3] == ("ConnectionRefusedError", "ConnectionError", "OSError")


def test_ctx_retry_becomes_a_retry_outcome() -> None:
    def handler(ctx: TaskContext) -> None:
        raise ctx.retry(countdown=5, exc=KeyError("k"))

    outcome = run(handler)
    assert outcome.status == "retry"
    assert outcome.countdown_s == 5
    assert outcome.error is not None and outcome.error["type"] == "KeyError"


def test_ctx_retry_inside_except_exception_is_not_swallowed() -> None:
    def handler(ctx: TaskContext) -> str:
        try:
            ctx.retry(eta=123.0)
        except Exception:
            return "swallowed"
        return "unreachable"

    outcome = run(handler)
    assert outcome.status == "retry" and outcome.eta == 123.0


def test_import_error_of_the_handler_is_the_attempt_error() -> None:
    def load() -> Handler:
        raise ImportError("no module named nowhere")

    outcome = execute(load, make_ctx(), {}, SoftLimit())
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error["type"] == "ImportError"


def test_soft_limit_cancels_an_async_handler_which_can_clean_up() -> None:
    cleaned: list[str] = []
    soft = SoftLimit()

    async def handler() -> None:
        asyncio.get_running_loop().call_later(0.01, soft.fire)
        try:
            await asyncio.sleep(5)
        finally:
            cleaned.append("yes")

    started = time.monotonic()
    outcome = run(handler, soft=soft)
    assert time.monotonic() - started < 2
    assert cleaned == ["yes"]
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error["type"] == "SoftTimeLimitExceeded"


def test_async_handler_that_swallows_the_soft_limit_succeeds() -> None:
    soft = SoftLimit()

    async def handler() -> str:
        asyncio.get_running_loop().call_later(0.01, soft.fire)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "cleaned up"
        return "slept"

    outcome = run(handler, soft=soft)
    assert outcome.status == "succeeded" and outcome.result == "cleaned up"


def test_sync_soft_limit_interrupt_is_caught_by_the_handler() -> None:
    soft = SoftLimit()

    def interrupt() -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    def handler() -> str:
        try:
            soft.fire()  # as the signal handler would, while the handler runs
        except SoftTimeLimitExceeded:
            return "handled"
        return "not interrupted"

    outcome = execute(lambda: handler, make_ctx(), {}, soft, interrupt)
    assert outcome.result == "handled"


def test_progress_validates_and_goes_through_the_bridge() -> None:
    bridge = DetachedBridge()
    ctx = TaskContext(id="t", task="demo", attempt=0, queue="q", bridge=bridge)
    ctx.progress(0.25, stage="a")
    ctx.heartbeat()
    assert bridge.progress_calls == [(0.25, {"stage": "a"})]
    assert bridge.heartbeats == 1
    with pytest.raises(ValueError, match="between 0 and 1"):
        ctx.progress(1.5)


def test_enqueue_sets_lineage() -> None:
    seen: dict[str, Any] = {}

    class Bridge(DetachedBridge):
        def enqueue(self, task: str, args: Any, options: dict[str, Any]) -> str:
            seen.update(options, task=task, args=args)
            return "child"

    ctx = TaskContext(id="t", task="demo", attempt=0, queue="q", root_id=None, bridge=Bridge())
    assert ctx.enqueue("other", {"a": 1}, priority=3) == "child"
    assert seen == {
        "task": "other",
        "args": {"a": 1},
        "priority": 3,
        "parent_id": "t",
        "root_id": "t",
    }
    nested = TaskContext(id="c", task="demo", attempt=0, queue="q", root_id="r", bridge=Bridge())
    nested.enqueue("other")
    assert seen["root_id"] == "r" and seen["parent_id"] == "c"
