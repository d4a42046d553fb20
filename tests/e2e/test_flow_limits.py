"""Global rate limits across worker processes, and unique tasks enqueued from many processes.

Runs on SQLite and on Redis (its own namespace, deleted afterwards).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from stemrun.client import Stem
from stemrun.state import TaskState
from tests import services
from tests.e2e.conftest import Project, wait_until

FLOW_YAML = """
version: 1
broker: {broker}
namespace: {namespace}
queues:
  default: {{}}
tasks:
  limited: {{handler: "e2etasks:record", rate_limit: 5/s}}
  report:
    handler: "e2etasks:record"
    unique: {{key: "{{args.n}}", ttl: 10m}}
workers:
  default:
    queues: [default]
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


def most_starts_in_a_window(starts: list[float], window_s: float) -> int:
    starts = sorted(starts)
    return max(
        sum(1 for other in starts[i:] if other - start <= window_s)
        for i, start in enumerate(starts)
    )


def test_three_workers_share_one_rate_limit(flow_project: Project) -> None:
    """50 tasks limited to 5/s on 3 workers: never more than 6 starts in any 1 s window."""
    with Stem.from_config(flow_project.root / "stem.yaml") as stem:
        for i in range(3):
            flow_project.start("worker", "-n", f"w{i}")
        ids = stem.enqueue_many([("limited", {"n": n}) for n in range(50)])
        wait_until(
            lambda: all(stem.status(i).state is TaskState.SUCCEEDED for i in reversed(ids)),
            60,
            "not all succeeded:\n" + flow_project.logs(),
        )
        statuses = [stem.status(i) for i in ids]
    starts = [s.started_at for s in statuses if s.started_at is not None]
    busiest, span = most_starts_in_a_window(starts, 1.0), max(starts) - min(starts)
    print(f"busiest 1 s window: {busiest} starts; 50 starts over {span:.2f}s")
    assert len(starts) == 50 and all(s.attempt == 0 for s in statuses)
    assert busiest <= 6
    assert span >= 9.0  # evenly spaced: 49 gaps of 0.2 s
    workers = {s.worker for s in statuses}
    assert len(workers) >= 2, f"one worker did everything: {workers}"
    assert sorted(int(line) for line in flow_project.ledger_lines()) == list(range(50))


ENQUEUER = """
import sys, time
from stemrun.client import Stem

start_at = float(sys.argv[1])
with Stem.from_config("stem.yaml") as stem:
    stem.status("warm-up")  # open the stores before the race starts
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(25):
        print(stem.enqueue("report", {"n": 7}), flush=True)
"""


def test_concurrent_duplicates_from_four_processes_run_once(flow_project: Project) -> None:
    """100 enqueues of one unique key from 4 processes at once: one id, one run."""
    script = flow_project.root / "enqueuer.py"
    script.write_text(textwrap.dedent(ENQUEUER))
    start_at = f"{time.time() + 2.0:.3f}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), start_at],
            cwd=flow_project.root,
            env=flow_project.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    ids = [line for out, _ in outputs for line in out.split()]
    assert len(ids) == 100 and len(set(ids)) == 1
    flow_project.start("worker", "-n", "w0")
    with Stem.from_config(flow_project.root / "stem.yaml") as stem:
        wait_until(
            lambda: stem.status(ids[0]).state is TaskState.SUCCEEDED,
            30,
            "the task did not run:\n" + flow_project.logs(),
        )
        time.sleep(0.5)  # a second copy, had one been published, would have run by now
        assert flow_project.ledger_lines() == ["7"]
        # Finished: the key is free again, and the next enqueue is a new task.
        assert stem.enqueue("report", {"n": 7}) != ids[0]


def test_a_missing_key_arg_is_refused_with_exit_2(flow_project: Project) -> None:
    done = flow_project.run("enqueue", "report", "--args", '{"m": 1}')
    assert done.returncode == 2, done.stderr
    assert "needs args.n" in done.stderr and done.stdout == ""
