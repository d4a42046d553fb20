"""A record's `started_at` is when its handler really began, on the process pool too.

The handler notes the wall-clock time of its first line; the status record's `started_at` must
match it within `TOLERANCE_S`: for tasks waiting while the pool children boot (the handler module
takes half a second to import, as one importing a large library does), and for tasks sent one by
one to a warm worker. Runs on SQLite and on Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stemrun.client import Stem
from stemrun.state import TaskState
from tests import services
from tests.e2e.conftest import Project, wait_until

TOLERANCE_S = 0.05

STAMP_MODULE = """
import os
import time

from stemrun import TaskContext

time.sleep(0.5)
STAMPS = os.environ.get("E2E_LEDGER", "ledger.txt") + ".starts"


def stamp(ctx: TaskContext) -> None:
    started = time.time()
    with open(STAMPS, "a") as stamps:
        stamps.write(f"{ctx.id} {started:.6f}\\n")
"""

STEM_YAML = """
version: 1
broker: {broker}
namespace: {namespace}
queues:
  default: {{}}
tasks:
  stamp: {{handler: "stamptasks:stamp"}}
workers:
  default:
    queues: [default]
    concurrency: 2
"""


@pytest.fixture(params=["sqlite", "redis"])
def stamp_project(request: pytest.FixtureRequest, project: Project) -> Iterator[Project]:
    """The e2e project with a stamping handler, on SQLite or on Redis (own namespace)."""
    namespace = services.unique_namespace("started")
    broker = "sqlite:///.stem/stem.db"
    if request.param == "redis":
        broker = services.require_redis()
    (project.root / "stamptasks.py").write_text(STAMP_MODULE)
    (project.root / "stem.yaml").write_text(STEM_YAML.format(broker=broker, namespace=namespace))
    yield project
    project.stop_all()
    if request.param == "redis":
        services.delete_redis_namespace(broker, namespace)


def real_starts(project: Project) -> dict[str, float]:
    path = Path(f"{project.ledger}.starts")
    lines = path.read_text().splitlines() if path.exists() else []
    return {task_id: float(at) for task_id, at in (line.split() for line in lines)}


def wait_succeeded(project: Project, stem: Stem, ids: list[str]) -> None:
    wait_until(
        lambda: all(stem.status(i).state is TaskState.SUCCEEDED for i in reversed(ids)),
        60,
        "not all succeeded:\n" + project.logs()[-3000:],
    )


def test_started_at_is_when_the_handler_began(stamp_project: Project) -> None:
    with Stem.from_config(stamp_project.root / "stem.yaml") as stem:
        ids = stem.enqueue_many([("stamp", {}) for _ in range(4)])  # before the children boot
        stamp_project.start("worker", "--pool", "process")
        wait_succeeded(stamp_project, stem, ids)
        for _ in range(4):  # one at a time, to a warm worker
            ids.append(stem.enqueue("stamp"))
            wait_succeeded(stamp_project, stem, ids[-1:])
        recorded = {task_id: stem.status(task_id).started_at for task_id in ids}
    real = real_starts(stamp_project)
    gaps = {task_id: real[task_id] - (recorded[task_id] or 0.0) for task_id in ids}
    described = ", ".join(f"{gap * 1000:.1f} ms" for gap in gaps.values())
    assert all(-TOLERANCE_S < gap < TOLERANCE_S for gap in gaps.values()), (
        f"handler start minus started_at: {described}"
    )
