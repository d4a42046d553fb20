"""The worker on the in-memory stores with the thread and async pools (one process)."""

from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stemrun.backends.record import MAX_STARTS, Transition
from stemrun.brokers.base import Message
from stemrun.client import Stem
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.envelope import Envelope, encode
from stemrun.errors import UnknownQueue, UsageError
from stemrun.state import TaskState
from stemrun.worker import Worker

TASKS = """
import asyncio
import os
import time

from stemrun import SoftTimeLimitExceeded
from stemrun.context import TaskContext

LEDGER = os.path.join(os.path.dirname(__file__), "ledger.txt")


def note(line):
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")


def add(ctx: TaskContext, x, y):
    note("add")
    ctx.progress(0.5, stage="adding")
    return {"sum": x + y, "attempt": ctx.attempt}


def fail(kind="value"):
    note("fail")
    raise {"value": ValueError, "conn": ConnectionRefusedError}[kind]("broken on purpose")


def retry_me(ctx):
    note("retry")
    raise ctx.retry(countdown=0.01)


def spawn(ctx):
    return ctx.enqueue("add", {"x": 1, "y": 1})


def slow(seconds=0.5):
    time.sleep(seconds)
    note("slow")
    return "slept"


def spin_until_interrupted():
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            time.sleep(0.005)
    except SoftTimeLimitExceeded:
        note("cleanup")
        raise
    return "never interrupted"


async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


async def async_sleeper():
    try:
        await asyncio.sleep(10)
    finally:
        note("async-cleanup")
"""

LIMITS = {"max_retries": 0, "soft_time_limit": "200ms"}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    """A tasks module with a unique name (imports are cached per process) and its directory."""
    module = f"wtasks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(TASKS))
    return tmp_path, module


def make_config(project: tuple[Path, str], **task_options: dict[str, Any]) -> Config:
    root, module = project
    names = ["add", "fail", "retry_me", "spawn", "slow", "spin_until_interrupted"]
    names += ["async_add", "async_sleeper"]
    tasks = {name: {"handler": f"{module}:{name}", **task_options.get(name, {})} for name in names}
    data = {
        "version": 1,
        "broker": "memory://",
        "result_backend": "memory://",
        "namespace": f"w{uuid.uuid4().hex[:10]}",
        "queues": {"default": {}, "other": {}},
        "tasks": tasks,
        "workers": {"default": {"queues": ["default"], "concurrency": 2, "pool": "thread"}},
    }
    return config_from_mapping(data, root_dir=root)


def ledger(project: tuple[Path, str]) -> list[str]:
    path = project[0] / "ledger.txt"
    return path.read_text().split() if path.exists() else []


@contextmanager
def running(worker: Worker) -> Iterator[list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()))
    thread.start()
    try:
        yield codes
    finally:
        worker.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the worker did not stop"


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_success_stores_result_and_progress(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    task_id = stem.enqueue("add", args={"x": 2, "y": 3})
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert status.state == TaskState.SUCCEEDED
    assert status.result == {"sum": 5, "attempt": 0}
    assert status.progress == 0.5 and status.progress_meta == {"stage": "adding"}
    assert status.started_at is not None and status.finished_at is not None
    assert status.worker is not None


def test_retries_exactly_max_retries_then_dead_letters(project: tuple[Path, str]) -> None:
    backoff = {"initial": "10ms", "max": "20ms", "factor": 2, "jitter": False}
    config = make_config(project, fail={"max_retries": 2, "retry_backoff": backoff})
    stem = Stem(config)
    task_id = stem.enqueue("fail")
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert ledger(project) == ["fail"] * 3
    assert status.state == TaskState.FAILED
    assert status.attempt == 2
    assert status.dead_letter_reason == "max-retries-exhausted"
    assert status.error is not None and status.error["type"] == "ValueError"
    [dead] = stem.dead_letters()
    assert dead.id == task_id and dead.reason == "max-retries-exhausted"


def test_dont_retry_on_fails_at_once(project: tuple[Path, str]) -> None:
    config = make_config(project, fail={"max_retries": 5, "dont_retry_on": ["ValueError"]})
    stem = Stem(config)
    task_id = stem.enqueue("fail")
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert ledger(project) == ["fail"]
    assert status.state == TaskState.FAILED and status.attempt == 0


def test_retry_on_allows_subclasses_only(project: tuple[Path, str]) -> None:
    backoff = {"initial": "10ms", "max": "10ms", "jitter": False}
    options = {"max_retries": 1, "retry_on": ["ConnectionError"], "retry_backoff": backoff}
    config = make_config(project, fail=options)
    stem = Stem(config)
    conn = stem.enqueue("fail", args={"kind": "conn"})
    value = stem.enqueue("fail", args={"kind": "value"})
    with running(Worker(config, install_signal_handlers=False)):
        assert stem.wait(conn, timeout=5).attempt == 1
        assert stem.wait(value, timeout=5).attempt == 0
    assert ledger(project).count("fail") == 3


def test_ctx_retry_counts_against_the_budget(project: tuple[Path, str]) -> None:
    config = make_config(project, retry_me={"max_retries": 3})
    stem = Stem(config)
    task_id = stem.enqueue("retry_me")
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert ledger(project) == ["retry"] * 4
    assert status.state == TaskState.FAILED
    assert status.dead_letter_reason == "max-retries-exhausted"


def test_child_enqueue_records_lineage(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    parent = stem.enqueue("spawn")
    with running(Worker(config, install_signal_handlers=False)):
        child_id = stem.wait(parent, timeout=5).result
        child = stem.wait(child_id, timeout=5)
    assert child.state == TaskState.SUCCEEDED
    assert child.parent_id == parent and child.root_id == parent


def test_expired_task_is_cancelled_and_never_runs(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    task_id = stem.enqueue("add", args={"x": 1, "y": 1}, expires=0.01)
    time.sleep(0.05)
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert status.state == TaskState.CANCELLED
    assert status.meta.get("reason") == "expired"
    assert ledger(project) == []


def publish_raw(stem: Stem, task_id: str, body: bytes) -> None:
    stem.broker.publish([Message(id=task_id, queue="default", body=body)])


def test_unregistered_and_undecodable_bodies_are_dead_lettered(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    unknown = Envelope(id="unknown-1", task="not.declared", queue="default", created_at=time.time())
    publish_raw(stem, "unknown-1", encode(unknown))
    publish_raw(stem, "garbage-1", b"\x00 this is not an envelope")
    with running(Worker(config, install_signal_handlers=False)):
        wait_until(lambda: len(stem.dead_letters()) == 2)
    reasons = {dead.id: dead.reason for dead in stem.dead_letters()}
    assert reasons == {"unknown-1": "unregistered-task", "garbage-1": "decode-error"}
    dead = stem.broker.dead_letter_get("unknown-1")
    assert dead is not None and dead.error is not None
    assert dead.error["type"] == "TaskNotRegistered" and dead.task == "not.declared"


def test_unregistered_task_with_a_status_record_is_failed(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    task_id = stem.enqueue("add", args={"x": 1, "y": 1})
    # the same id re-published under a task this worker's config does not declare
    stem.broker.fetch(["default"], 1, consumer="test", lease_s=60)
    ghost = Envelope(id=task_id, task="gone", queue="default", created_at=time.time())
    publish_raw(stem, task_id, encode(ghost))
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert status.state == TaskState.FAILED
    assert status.error is not None and status.error["type"] == "TaskNotRegistered"
    assert status.dead_letter_reason == "unregistered-task"


def test_poison_message_is_dead_lettered_after_max_starts(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    task_id = stem.enqueue("add", args={"x": 1, "y": 1})
    for _ in range(MAX_STARTS):  # a worker that starts it and dies, MAX_STARTS times
        [held] = stem.broker.fetch(["default"], 1, consumer="doomed", lease_s=0.01, block_s=1)
        start = Transition(
            task_id=task_id, attempt=0, state=TaskState.RUNNING, receipt=held.receipt
        )
        assert stem.backend.transition([start]) == [True]
        time.sleep(0.02)
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert status.state == TaskState.FAILED
    assert status.dead_letter_reason == "max-deliveries-exceeded"
    assert ledger(project) == []


def test_deliveries_never_started_are_not_poison(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    task_id = stem.enqueue("add", args={"x": 1, "y": 1})
    for _ in range(MAX_STARTS * 2):  # held in the buffer of a worker that died, many times
        assert stem.broker.fetch(["default"], 1, consumer="doomed", lease_s=0.01, block_s=1)
        time.sleep(0.02)
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert status.state == TaskState.SUCCEEDED
    assert ledger(project) == ["add"]


def test_graceful_stop_finishes_in_flight_tasks(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    task_id = stem.enqueue("slow", args={"seconds": 0.4})
    worker = Worker(config, install_signal_handlers=False)
    with running(worker) as codes:
        wait_until(lambda: stem.status(task_id).state == TaskState.RUNNING)
        worker.stop()
    assert codes == [0]
    assert stem.status(task_id).state == TaskState.SUCCEEDED
    assert ledger(project) == ["slow"]


def test_graceful_stop_hands_back_buffered_tasks(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    ids = [stem.enqueue("slow", args={"seconds": 0.3}) for _ in range(4)]
    worker = Worker(config, concurrency=1, install_signal_handlers=False)
    with running(worker):
        wait_until(lambda: stem.status(ids[0]).state == TaskState.RUNNING)
        worker.stop()
    states = [stem.status(task_id).state for task_id in ids]
    assert states[0] == TaskState.SUCCEEDED
    assert states.count(TaskState.QUEUED) >= 2  # not run, not lost: still in the queue
    with running(Worker(config, install_signal_handlers=False, burst=True)):
        for task_id in ids:
            assert stem.wait(task_id, timeout=5).state == TaskState.SUCCEEDED
    assert ledger(project).count("slow") == 4


def test_thread_soft_limit_raises_inside_the_handler(project: tuple[Path, str]) -> None:
    config = make_config(project, spin_until_interrupted=LIMITS)
    stem = Stem(config)
    task_id = stem.enqueue("spin_until_interrupted")
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=5)
    assert ledger(project) == ["cleanup"]
    assert status.state == TaskState.FAILED
    assert status.error is not None and status.error["type"] == "SoftTimeLimitExceeded"


def test_thread_hard_limit_abandons_the_attempt_and_keeps_serving(
    project: tuple[Path, str],
) -> None:
    config = make_config(project, slow={"max_retries": 0, "hard_time_limit": "200ms"})
    stem = Stem(config)
    slow = stem.enqueue("slow", args={"seconds": 1.0})
    with running(Worker(config, concurrency=1, install_signal_handlers=False)):
        status = stem.wait(slow, timeout=5)
        assert status.state == TaskState.FAILED
        assert status.error is not None and status.error["type"] == "HardTimeLimitExceeded"
        quick = stem.enqueue("add", args={"x": 1, "y": 2})
        assert stem.wait(quick, timeout=5).state == TaskState.SUCCEEDED
        time.sleep(1.0)  # the abandoned thread finishes; its late result must change nothing
    assert stem.status(slow).state == TaskState.FAILED


def test_async_pool_runs_coroutines_and_cancels_at_the_soft_limit(
    project: tuple[Path, str],
) -> None:
    config = make_config(project, async_sleeper=LIMITS)
    stem = Stem(config)
    added = stem.enqueue("async_add", args={"x": 20, "y": 22})
    sleeper = stem.enqueue("async_sleeper")
    sync = stem.enqueue("add", args={"x": 1, "y": 1})
    with running(Worker(config, pool="async", install_signal_handlers=False)):
        assert stem.wait(added, timeout=5).result == 42
        assert stem.wait(sync, timeout=5).result == {"sum": 2, "attempt": 0}
        status = stem.wait(sleeper, timeout=5)
    assert status.error is not None and status.error["type"] == "SoftTimeLimitExceeded"
    assert "async-cleanup" in ledger(project)


def test_burst_exits_when_the_queues_are_empty(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    ids = [stem.enqueue("add", args={"x": n, "y": 0}) for n in range(5)]
    assert Worker(config, burst=True, install_signal_handlers=False).run() == 0
    assert [stem.status(task_id).result["sum"] for task_id in ids] == list(range(5))


def test_worker_heartbeat_is_published_and_removed(project: tuple[Path, str]) -> None:
    config = make_config(project)
    stem = Stem(config)
    worker = Worker(config, name="hb-worker", install_signal_handlers=False)
    with running(worker):
        wait_until(lambda: any(w.id == "hb-worker" for w in stem.telemetry.workers()))
        [beat] = [w for w in stem.telemetry.workers() if w.id == "hb-worker"]
        assert beat.queues == ("default",) and beat.concurrency == 2
        json.dumps(beat.to_dict())
    assert not any(w.id == "hb-worker" for w in stem.telemetry.workers())


def test_usage_errors(project: tuple[Path, str]) -> None:
    config = make_config(project)
    with pytest.raises(UsageError, match="known groups: default"):
        Worker(config, group="nope", install_signal_handlers=False)
    with pytest.raises(UnknownQueue, match="'missing'"):
        Worker(config, queues=["missing"], install_signal_handlers=False)
    with pytest.raises(UsageError, match="thread"):
        Worker(config, pool="process", install_signal_handlers=False)


def test_group_overrides(project: tuple[Path, str]) -> None:
    config = make_config(project)
    worker = Worker(
        config, queues=["other", "default"], concurrency=3, install_signal_handlers=False
    )
    assert worker.plan.queues == ("other", "default")
    assert worker.plan.concurrency == 3 and worker.plan.pool == "thread"
    assert worker.plan.capacity == 6
