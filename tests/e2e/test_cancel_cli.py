"""`stemrun cancel`: queued tasks never run; running ones stop at their next ctx call."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from tests.e2e.conftest import Project, wait_until

CANCEL_TASKS = """
import os
import time

from stemrun import TaskContext
from stemrun.errors import TaskCancelled

LEDGER = os.environ.get("E2E_LEDGER", "ledger.txt")


def note(line: str) -> None:
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")


def looper(ctx: TaskContext, steps: int = 400, pause: float = 0.05) -> str:
    note(f"looper attempt {ctx.attempt}")
    try:
        for i in range(steps):
            ctx.progress(i / steps, step=i)
            time.sleep(pause)
    except TaskCancelled:
        note("looper cleanup")
        raise
    note("looper finished")
    return "finished"
"""

STEM_YAML = """
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  record: {handler: "e2etasks:record"}
  looper: {handler: "canceltasks:looper", max_retries: 3}
"""


@pytest.fixture
def cancel_project(project: Project) -> Project:
    (project.root / "canceltasks.py").write_text(CANCEL_TASKS)
    (project.root / "stem.yaml").write_text(textwrap.dedent(STEM_YAML))
    return project


def _status(project: Project, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = project.run_json("status", task_id, "--json")
    return data


def _enqueue(project: Project, *args: str) -> str:
    done = project.run("enqueue", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_cancelled_queued_task_never_runs(cancel_project: Project) -> None:
    project = cancel_project
    task_id = _enqueue(project, "record", "--args", '{"n": 1}')
    kept_id = _enqueue(project, "record", "--args", '{"n": 2}')
    done = project.run("cancel", task_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{task_id}: cancelled"
    status = _status(project, task_id)
    assert status["state"] == "cancelled" and status["meta"]["reason"] == "cancelled"

    again = project.run("cancel", task_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr

    for _ in range(2):  # a second worker start still skips it
        burst = project.run("worker", "--burst", "--pool", "thread")
        assert burst.returncode == 0, burst.stderr
    assert project.ledger_lines() == ["2"]
    assert _status(project, task_id)["state"] == "cancelled"
    assert _status(project, kept_id)["state"] == "succeeded"
    finished = project.run("cancel", kept_id)
    assert finished.returncode == 1 and "already succeeded" in finished.stderr


def test_cancel_an_unknown_id_fails(cancel_project: Project) -> None:
    done = cancel_project.run("cancel", "no-such-task")
    assert done.returncode == 1
    assert "unknown task id" in done.stderr


@pytest.mark.parametrize("pool", ["process", "thread", "async"])
def test_a_running_task_stops_at_its_next_progress_call(cancel_project: Project, pool: str) -> None:
    project = cancel_project
    project.start("worker", "--pool", pool, "-c", "2")
    task_id = _enqueue(project, "looper")

    def reporting() -> bool:
        status = _status(project, task_id)
        return status["state"] == "running" and status["progress"] is not None

    wait_until(reporting, 30, f"the task never ran:\n{project.logs()}")
    done = project.run("cancel", task_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "running"  # cooperative: it stops by itself

    waited = project.run("status", task_id, "--wait", "--timeout", "20s", "--json")
    final = json.loads(waited.stdout)
    assert waited.returncode == 1, project.logs()  # cancelled is not success
    assert final["state"] == "cancelled" and final["meta"]["reason"] == "cancelled"
    assert final["attempt"] == 0
    assert project.ledger_lines() == ["looper attempt 0", "looper cleanup"]  # never retried
    totals = project.run_json("observe", "metrics", "--json")
    wait_until(
        lambda: project.run_json("observe", "metrics", "--json")["tasks"]["cancelled"] == 1,
        10,
        f"cancel not counted: {totals}",
    )
