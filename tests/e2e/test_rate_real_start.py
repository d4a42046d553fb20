"""A rate limit measured where it matters: the moment each handler really begins.

`rate_limit: 5/s` over three workers promises at most 6 starts in any 1 s window
(docs/flow-control.md). The handler stamps its own wall-clock start, so time spent between the
worker's decision and the handler's first line (a pool child still booting, a handler module
still importing) counts against the limit, as a user sees it. The handler module takes a second
to import, which makes that time long enough to see every run. Runs on SQLite and on Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stemrun.client import Stem
from stemrun.state import TaskState
from tests import services
from tests.e2e.conftest import Project, wait_until
from tests.e2e.test_flow_limits import most_starts_in_a_window

RATE, PERIOD_S = 5, 1.0

# The handler module takes a second to import, as one importing a large library does.
STAMP_MODULE = '''
import os
import time

time.sleep(1.0)
STAMPS = os.environ.get("E2E_LEDGER", "ledger.txt") + ".starts"


def stamp(n: int) -> int:
    """Note when this handler began (its first line), then return."""
    started = time.time()
    with open(STAMPS, "a") as stamps:
        stamps.write(f"{started:.6f} {n} {os.getpid()}\\n")
    return n
'''

RATE_YAML = """
version: 1
broker: {broker}
namespace: {namespace}
queues:
  default: {{}}
tasks:
  limited: {{handler: "ratetasks:stamp", rate_limit: {rate}/s}}
workers:
  default:
    queues: [default]
    concurrency: 2
"""


@pytest.fixture(params=["sqlite", "redis"])
def rate_project(request: pytest.FixtureRequest, project: Project) -> Iterator[Project]:
    """The e2e project with a stamping handler, on SQLite or on Redis (own namespace)."""
    namespace = services.unique_namespace("rate")
    broker = "sqlite:///.stem/stem.db"
    if request.param == "redis":
        broker = services.require_redis()
    (project.root / "ratetasks.py").write_text(STAMP_MODULE)
    (project.root / "stem.yaml").write_text(
        RATE_YAML.format(broker=broker, namespace=namespace, rate=RATE)
    )
    yield project
    project.stop_all()
    if request.param == "redis":
        services.delete_redis_namespace(broker, namespace)


def real_starts(project: Project) -> list[float]:
    path = Path(f"{project.ledger}.starts")
    lines = path.read_text().splitlines() if path.exists() else []
    return sorted(float(line.split()[0]) for line in lines)


def start_workers(project: Project, pool: str) -> None:
    for i in range(3):
        project.start("worker", "-n", f"w{i}", "--pool", pool)


def run_batch(project: Project, stem: Stem, first: int, count: int) -> list[float]:
    """Enqueue `count` limited tasks, wait until all succeeded; every real start so far."""
    ids = stem.enqueue_many([("limited", {"n": n}) for n in range(first, first + count)])
    wait_until(
        lambda: all(stem.status(i).state is TaskState.SUCCEEDED for i in reversed(ids)),
        60,
        "not all succeeded:\n" + project.logs(),
    )
    assert all(stem.status(i).attempt == 0 for i in ids)
    return real_starts(project)


def describe(starts: list[float]) -> str:
    return "real starts (s after the first): " + ", ".join(
        f"{start - starts[0]:.3f}" for start in starts
    )


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_backlog_waiting_for_booting_workers_starts_evenly(
    rate_project: Project, pool: str
) -> None:
    """Tasks queued before three workers boot: their first starts are spaced, not a burst."""
    with Stem.from_config(rate_project.root / "stem.yaml") as stem:
        stem.status("warm-up")  # create the stores before the workers race to
        ids = stem.enqueue_many([("limited", {"n": n}) for n in range(20)])
        start_workers(rate_project, pool)
        wait_until(
            lambda: all(stem.status(i).state is TaskState.SUCCEEDED for i in reversed(ids)),
            60,
            "not all succeeded:\n" + rate_project.logs(),
        )
    starts = real_starts(rate_project)
    assert len(starts) == 20, describe(starts)
    assert most_starts_in_a_window(starts, PERIOD_S) <= RATE + 1, describe(starts)
    first = starts[: RATE + 1]
    assert first[-1] - first[0] >= 0.8 * PERIOD_S, "a start-up burst: " + describe(starts)


def test_starts_stay_spaced_while_workers_run(rate_project: Project) -> None:
    """Workers started, then batches enqueued: no 1 s window of real starts holds more than 6."""
    with Stem.from_config(rate_project.root / "stem.yaml") as stem:
        stem.status("warm-up")
        start_workers(rate_project, "process")
        starts = run_batch(rate_project, stem, 0, 15)
        assert most_starts_in_a_window(starts, PERIOD_S) <= RATE + 1, describe(starts)
        starts = run_batch(rate_project, stem, 15, 15)
    assert len(starts) == 30
    assert most_starts_in_a_window(starts, PERIOD_S) <= RATE + 1, describe(starts)
