"""Canvases driven by real workers (thread pool) on the embedded SQLite stores."""

from __future__ import annotations

import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stemrun.client import Stem, TaskStatus
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.state import TaskState
from stemrun.worker import Worker

TASKS = """
import os

LEDGER = os.path.join(os.path.dirname(__file__), "ledger.txt")


def note(line):
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")


def fetch(user_id):
    note(f"fetch {user_id}")
    return {"user": user_id}


def enrich(previous):
    note("enrich")
    return {**previous, "plan": "pro"}


def cache(previous):
    note("cache")
    return {**previous, "cached": True}


def square(n, fail_on=None):
    if n == fail_on:
        raise ConnectionError(f"member {n} is down")
    return n * n


def total(results):
    note(f"total {len(results)}")
    return sum(results)


def double(previous):
    return previous * 2


def on_error(error, task_id):
    note(f"error {task_id} {error['type']}")
    return task_id
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    module = f"ctasks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(TASKS))
    names = ["fetch", "enrich", "cache", "square", "total", "double", "on_error"]
    tasks: dict[str, Any] = {name: {"handler": f"{module}:{name}"} for name in names}
    backoff = {"initial": "10ms", "max": "10ms", "jitter": False}
    tasks["square"].update(max_retries=1, retry_backoff=backoff)
    data = {
        "broker": f"sqlite:///{tmp_path / 'stem.db'}",
        "queues": {"default": {}},
        "tasks": tasks,
        "workers": {"default": {"queues": ["default"], "concurrency": 4, "pool": "thread"}},
        "workflows": {
            "onboarding": {
                "chain": [{"task": "fetch"}, {"task": "enrich"}, {"task": "cache"}],
            },
        },
    }
    return config_from_mapping(data, root_dir=tmp_path)


def ledger(config: Config) -> list[str]:
    path = config.root_dir / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


def wait_for(stem: Stem, task_id: str, timeout: float = 20) -> TaskStatus:
    """Wait for a follow-up that a worker enqueues a moment after its parent finished."""
    deadline = time.monotonic() + timeout
    while stem.status(task_id).state is TaskState.UNKNOWN:
        assert time.monotonic() < deadline, f"{task_id} was never enqueued"
        time.sleep(0.01)
    return stem.wait(task_id, timeout=timeout)


@contextmanager
def workers(config: Config, count: int = 1) -> Iterator[None]:
    running = [Worker(config, name=f"w{i}", install_signal_handlers=False) for i in range(count)]
    threads = [threading.Thread(target=w.run) for w in running]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for worker in running:
            worker.stop()
        for thread in threads:
            thread.join(timeout=15)


def test_a_declared_chain_runs_in_order(config: Config) -> None:
    with Stem(config) as stem, workers(config):
        wf_id = stem.run_workflow("onboarding", args={"user_id": 7})
        final = stem.wait(wf_id, timeout=20)
    assert ledger(config) == ["fetch 7", "enrich", "cache"]
    assert final.state is TaskState.SUCCEEDED
    assert final.result == {"user": 7, "plan": "pro", "cached": True}
    assert final.task == "onboarding" and final.meta["canvas"] == "chain"


def test_a_chord_across_two_workers_calls_back_once(config: Config) -> None:
    with Stem(config) as stem, workers(config, count=2):
        chord_id = stem.canvas.chord([("square", {"n": n}) for n in range(30)], "total")
        final = stem.wait(chord_id, timeout=30)
        callback = stem.status(f"{chord_id}.callback")
        view = stem.canvas.describe(stem.status(chord_id))
    assert final.state is TaskState.SUCCEEDED
    assert final.result == sum(n * n for n in range(30))
    assert callback.args["results"] == [n * n for n in range(30)]
    assert ledger(config) == ["total 30"]
    assert view is not None and (view["completed"], view["succeeded"]) == (30, 30)


def test_a_member_failing_after_its_retries_fails_the_chord(config: Config) -> None:
    body = [("square", {"n": n, "fail_on": 3}) for n in range(6)]
    with Stem(config) as stem, workers(config):
        chord_id = stem.canvas.chord(body, "total")
        final = stem.wait(chord_id, timeout=20)
        member = stem.wait(f"{chord_id}.3", timeout=5)
    assert final.state is TaskState.FAILED
    assert final.meta["failed_step"] == f"{chord_id}.3"
    assert final.error is not None and final.error["type"] == "ConnectionError"
    assert member.attempt == 1, "the member used its retry before the chord failed"
    assert not any(line.startswith("total") for line in ledger(config))


def test_a_group_collects_results_in_order(config: Config) -> None:
    with Stem(config) as stem, workers(config, count=2):
        group_id = stem.canvas.group([("square", {"n": n}) for n in range(10)])
        final = stem.wait(group_id, timeout=20)
    assert final.state is TaskState.SUCCEEDED and final.result == [n * n for n in range(10)]


def test_link_error_receives_the_error_of_a_failed_task(config: Config) -> None:
    with Stem(config) as stem, workers(config):
        ok = stem.enqueue("square", {"n": 4}, link="double")
        bad = stem.enqueue("square", {"n": 1, "fail_on": 1}, link_error="on_error")
        linked = wait_for(stem, f"{ok}.link")
        handled = wait_for(stem, f"{bad}.link_error")
    assert linked.result == 32
    assert handled.result == bad
    assert f"error {bad} ConnectionError" in ledger(config)
