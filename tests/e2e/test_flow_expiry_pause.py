"""`expires` and `stemrun queue pause/resume`, run as a user does, on SQLite and on Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests import services
from tests.e2e.conftest import Project, wait_until

FLOW_YAML = """
version: 1
broker: {broker}
namespace: {namespace}
queues:
  default: {{}}
  other: {{}}
tasks:
  record: {{handler: "e2etasks:record"}}
  elsewhere: {{handler: "e2etasks:record", queue: other}}
workers:
  default:
    queues: [default, other]
    concurrency: 2
"""


@pytest.fixture(params=["sqlite", "redis"])
def flow_project(request: pytest.FixtureRequest, project: Project) -> Iterator[Project]:
    """The e2e project on SQLite or on Redis (with a namespace of its own)."""
    namespace = services.unique_namespace("flow")
    broker = "sqlite:///.stem/stem.db"
    if request.param == "redis":
        broker = services.require_redis()
    (project.root / "stem.yaml").write_text(FLOW_YAML.format(broker=broker, namespace=namespace))
    yield project
    project.stop_all()
    if request.param == "redis":
        services.delete_redis_namespace(broker, namespace)


def state_of(project: Project, task_id: str) -> str:
    return str(project.run_json("status", task_id, "--json")["state"])


def enqueue(project: Project, *args: str) -> str:
    done = project.run("enqueue", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_expired_task_is_cancelled_and_never_runs(flow_project: Project) -> None:
    expiring = enqueue(flow_project, "record", "-a", "n=1", "--expires", "500ms")
    lasting = enqueue(flow_project, "record", "-a", "n=2", "--expires", "1h")
    time.sleep(1.0)
    flow_project.start("worker", "-n", "w0")
    wait_until(lambda: state_of(flow_project, lasting) == "succeeded", 30, flow_project.logs())
    status = flow_project.run_json("status", expiring, "--json")
    assert status["state"] == "cancelled" and status["meta"]["reason"] == "expired"
    assert status["started_at"] is None
    assert flow_project.ledger_lines() == ["2"]
    waited = flow_project.run("status", expiring, "--wait", "--timeout", "5s")
    assert waited.returncode == 1  # cancelled is not success


def test_a_paused_queue_is_left_alone_until_resumed(flow_project: Project) -> None:
    flow_project.start("worker", "-n", "w0")
    warm = enqueue(flow_project, "record", "-a", "n=0")
    wait_until(lambda: state_of(flow_project, warm) == "succeeded", 30, flow_project.logs())

    paused = flow_project.run("queue", "pause", "default")
    assert paused.returncode == 0, paused.stderr
    time.sleep(1.5)  # every worker sees the pause within about a second
    held = enqueue(flow_project, "record", "-a", "n=1")
    other = enqueue(flow_project, "elsewhere", "-a", "n=2")
    wait_until(lambda: state_of(flow_project, other) == "succeeded", 30, flow_project.logs())
    time.sleep(1.0)
    assert state_of(flow_project, held) == "queued"
    assert sorted(flow_project.ledger_lines()) == ["0", "2"]

    # Persistent: a worker started later does not take from the paused queue either.
    flow_project.stop_all()
    flow_project.start("worker", "-n", "w1")
    time.sleep(1.5)
    assert state_of(flow_project, held) == "queued"

    resumed = flow_project.run("queue", "resume", "default", "--json")
    assert resumed.returncode == 0 and '"paused": false' in resumed.stdout
    wait_until(lambda: state_of(flow_project, held) == "succeeded", 10, flow_project.logs())


def test_pausing_an_undeclared_queue_exits_2(flow_project: Project) -> None:
    done = flow_project.run("queue", "pause", "nope")
    assert done.returncode == 2
    assert "queue 'nope' is not declared" in done.stderr
