"""The worker on SQLite with the default process pool: a real stem.yaml and tasks module."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stemrun.client import Stem
from stemrun.config import load_config
from stemrun.config.model import Config
from stemrun.state import TaskState
from stemrun.worker import Worker

TASKS = """
import os
import time

from stemrun import SoftTimeLimitExceeded
from stemrun.context import TaskContext

LEDGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ledger.txt")


def note(line):
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")


def add(ctx: TaskContext, x, y):
    ctx.progress(0.75, stage="adding")
    print("handlers may print: this must not corrupt the pipe")
    return x + y


def fail():
    note("fail")
    raise ValueError("broken on purpose")


def soft_cleanup(swallow=False):
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        note("cleanup")
        if swallow:
            return "cleaned up"
        raise
    finally:
        note("finally")
    return "slept"


def stuck():
    note("stuck")
    time.sleep(30)


def long_task(seconds):
    note("long-start")
    time.sleep(seconds)
    note("long-end")
    return "done"


def pid():
    return os.getpid()


def crash():
    note("crash")
    os._exit(3)
"""

CONFIG = """
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  add: {handler: wtasks:add}
  fail:
    handler: wtasks:fail
    max_retries: 2
    retry_backoff: {initial: 10ms, max: 20ms, factor: 2, jitter: false}
  soft_cleanup: {handler: wtasks:soft_cleanup, max_retries: 0, soft_time_limit: 300ms}
  stuck:
    handler: wtasks:stuck
    max_retries: 1
    hard_time_limit: 500ms
    retry_backoff: {initial: 10ms, jitter: false}
  long_task: {handler: wtasks:long_task, visibility_timeout: 1s}
  pid: {handler: wtasks:pid}
  crash: {handler: wtasks:crash, max_retries: 0}
workers:
  default:
    queues: [default]
    concurrency: 2
    pool: process
  recycled:
    queues: [default]
    concurrency: 1
    max_tasks_per_child: 2
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "wtasks.py").write_text(textwrap.dedent(TASKS))
    (tmp_path / "stem.yaml").write_text(CONFIG)
    return load_config(tmp_path / "stem.yaml")


@pytest.fixture
def stem(config: Config) -> Iterator[Stem]:
    client = Stem(config)
    yield client
    client.close()


def ledger(config: Config) -> list[str]:
    path = config.root_dir / "ledger.txt"
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
        thread.join(timeout=20)
        assert not thread.is_alive(), "the worker did not stop"


def test_success_result_and_progress_are_stored(config: Config, stem: Stem) -> None:
    task_id = stem.enqueue("add", args={"x": 40, "y": 2})
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=10)
    assert status.state == TaskState.SUCCEEDED and status.result == 42
    assert status.progress == 0.75 and status.progress_meta == {"stage": "adding"}
    assert status.expires_at is not None and status.finished_at is not None
    assert status.expires_at == pytest.approx(status.finished_at + 86400)


def test_retries_then_dead_letters(config: Config, stem: Stem) -> None:
    task_id = stem.enqueue("fail")
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=10)
    assert ledger(config) == ["fail"] * 3
    assert status.state == TaskState.FAILED and status.attempt == 2
    assert status.dead_letter_reason == "max-retries-exhausted"
    assert [dead.id for dead in stem.dead_letters()] == [task_id]


@pytest.mark.parametrize(("swallow", "state"), [(False, "failed"), (True, "succeeded")])
def test_soft_limit_lets_the_handler_clean_up(
    config: Config, stem: Stem, swallow: bool, state: str
) -> None:
    task_id = stem.enqueue("soft_cleanup", args={"swallow": swallow})
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=10)
    assert ledger(config) == ["cleanup", "finally"]
    assert status.state == state
    if swallow:
        assert status.result == "cleaned up"
    else:
        assert status.error is not None and status.error["type"] == "SoftTimeLimitExceeded"


def test_hard_limit_kills_retries_and_keeps_serving(config: Config, stem: Stem) -> None:
    stuck = stem.enqueue("stuck")
    with running(Worker(config, concurrency=1, install_signal_handlers=False)):
        status = stem.wait(stuck, timeout=15)
        quick = stem.enqueue("add", args={"x": 1, "y": 1})
        assert stem.wait(quick, timeout=10).result == 2
    assert ledger(config) == ["stuck", "stuck"]  # max_retries 1: two runs, each killed
    assert status.state == TaskState.FAILED
    assert status.error is not None and status.error["type"] == "HardTimeLimitExceeded"
    assert status.dead_letter_reason == "max-retries-exhausted"


def test_lease_is_renewed_while_a_long_task_runs(config: Config, stem: Stem) -> None:
    task_id = stem.enqueue("long_task", args={"seconds": 2.5})
    with running(Worker(config, install_signal_handlers=False)):
        status = stem.wait(task_id, timeout=15)
    assert status.state == TaskState.SUCCEEDED
    assert ledger(config) == ["long-start", "long-end"]  # ran once: never redelivered


def test_children_are_recycled_after_max_tasks(config: Config, stem: Stem) -> None:
    ids = [stem.enqueue("pid") for _ in range(4)]
    with running(Worker(config, group="recycled", install_signal_handlers=False)):
        pids = [stem.wait(task_id, timeout=10).result for task_id in ids]
    assert len(set(pids)) == 2
    assert os.getpid() not in pids


def test_a_crashed_child_fails_its_attempt_and_is_replaced(config: Config, stem: Stem) -> None:
    crashed = stem.enqueue("crash")
    with running(Worker(config, concurrency=1, install_signal_handlers=False)):
        status = stem.wait(crashed, timeout=10)
        after = stem.enqueue("add", args={"x": 2, "y": 2})
        assert stem.wait(after, timeout=10).result == 4
    assert status.state == TaskState.FAILED
    assert status.error is not None and status.error["type"] == "WorkerLostError"


def test_graceful_stop_finishes_in_flight(config: Config, stem: Stem) -> None:
    task_id = stem.enqueue("long_task", args={"seconds": 0.5})
    worker = Worker(config, install_signal_handlers=False)
    started = time.monotonic()
    with running(worker) as codes:
        while stem.status(task_id).state != TaskState.RUNNING:
            assert time.monotonic() - started < 10
            time.sleep(0.01)
        worker.stop()
    assert codes == [0]
    assert stem.status(task_id).state == TaskState.SUCCEEDED


def test_forced_stop_leaves_the_task_for_redelivery(config: Config, stem: Stem) -> None:
    task_id = stem.enqueue("long_task", args={"seconds": 5})
    worker = Worker(config, install_signal_handlers=False)
    started = time.monotonic()
    with running(worker) as codes:
        while stem.status(task_id).state != TaskState.RUNNING:
            assert time.monotonic() - started < 10
            time.sleep(0.01)
        worker.stop(graceful=False)
    assert codes == [1]
    assert time.monotonic() - started < 5
    assert stem.status(task_id).state == TaskState.RUNNING  # not acked: leased until it lapses
    assert stem.broker.stats(["default"])["default"].in_flight == 1
