"""Faults that once lost or misattributed work: a stale owner's result, innocent tasks called
poison, records that kept an old error (docs/guarantees.md).

Each test runs `stemrun worker` as a user does, on SQLite and on Redis (its own namespace), and
places the fault with a stopped or killed process rather than a timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

FAULT_TASKS = '''
import os
import signal
import time
from pathlib import Path

HERE = Path(os.environ["E2E_LEDGER"]).parent


def wait_for(name: str) -> None:
    while not (HERE / name).exists():
        time.sleep(0.02)


def owner() -> str:
    """First run: finish once its worker is stopped. Later runs: finish on `release`."""
    first = HERE / "first-started"
    if not first.exists():
        first.write_text(str(os.getpid()))
        wait_for("worker-stopped")
        return "stale owner"
    (HERE / "second-started").write_text(str(os.getpid()))
    wait_for("release")
    return "current owner"


def poison() -> None:
    """Kill the worker running it (the process-pool child's parent)."""
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(5)


def innocent(n: int) -> int:
    return n


def flaky_once() -> str:
    marker = HERE / "failed-once"
    if not marker.exists():
        marker.write_text("x")
        raise ConnectionError("first attempt fails")
    return "recovered"


def refuse() -> None:
    raise PermissionError("never retry this")
'''

FAULT_YAML = """
version: 1
broker: {broker}
namespace: {namespace}
queues:
  default: {{}}
tasks:
  owner: {{handler: "faulttasks:owner", visibility_timeout: 1s, max_retries: 0}}
  poison: {{handler: "faulttasks:poison", visibility_timeout: 1s}}
  innocent: {{handler: "faulttasks:innocent", visibility_timeout: 1s}}
  flaky_once:
    handler: "faulttasks:flaky_once"
    retry_backoff: {{initial: 10ms, jitter: false}}
  refuse: {{handler: "faulttasks:refuse", dont_retry_on: [PermissionError]}}
workers:
  default:
    queues: [default]
    concurrency: 1
    prefetch_multiplier: 4
"""


@pytest.fixture(params=["sqlite", "redis"])
def faults(request: pytest.FixtureRequest, project: Project) -> Iterator[Path]:
    """The project's stem.yaml on SQLite or on Redis (in a namespace of its own)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        namespace = request.getfixturevalue("redis_namespace")
    else:
        url, namespace = "sqlite:///.stem/stem.db", "stemrun"
    (project.root / "faulttasks.py").write_text(FAULT_TASKS)
    path = project.root / "stem.yaml"
    path.write_text(FAULT_YAML.format(broker=url, namespace=namespace))
    yield path


def test_stale_owner_result_is_ignored(project: Project, faults: Path) -> None:
    """A worker stopped past its lease, resumed while the new owner runs: the new owner wins."""
    with Stem.from_config(faults) as stem:
        task_id = stem.enqueue("owner")
        stale = project.start("worker", "-n", "stale")
        wait_until((project.root / "first-started").exists, 30, "the first run never started")
        os.kill(stale.pid, signal.SIGSTOP)
        (project.root / "worker-stopped").write_text("x")  # its result now waits in the pipe
        project.start("worker", "-n", "current")
        wait_until((project.root / "second-started").exists, 30, "the lease was never taken over")
        os.kill(stale.pid, signal.SIGCONT)
        wait_until(lambda: "ignored" in project.logs(), 30, "the stale result was not ignored")
        (project.root / "release").write_text("go")
        status = stem.wait(task_id, timeout=30)
    assert (status.state, status.result, status.worker) == (
        TaskState.SUCCEEDED,
        "current owner",
        "current",
    )
    assert "succeeded" not in _log_of(project, stale)


def test_only_started_deliveries_count_towards_poison(project: Project, faults: Path) -> None:
    """A task that kills its worker each time is dead-lettered; the tasks its worker held are not.

    The poison has the top priority, so every worker starts it first and dies holding the
    innocent tasks it had prefetched: they are delivered again after every death, never started.
    """
    with Stem.from_config(faults) as stem:
        poison_id = stem.enqueue("poison", priority=9)
        innocents = stem.enqueue_many([("innocent", {"n": n}) for n in range(3)])

        def dead_lettered() -> bool:
            return stem.status(poison_id).state is TaskState.FAILED

        for _ in range(10):  # a worker each time, until one outlives the poison
            worker = project.start("worker", "-n", "worker")
            wait_until(lambda w=worker: w.poll() is not None or dead_lettered(), 60, "stuck")
            if dead_lettered():
                break
        poisoned = stem.wait(poison_id, timeout=30)
        done = [stem.wait(i, timeout=30) for i in innocents]
    assert (poisoned.state, poisoned.dead_letter_reason) == (
        TaskState.FAILED,
        "max-deliveries-exceeded",
    )
    assert poisoned.starts == 6
    assert [(s.state, s.result) for s in done] == [(TaskState.SUCCEEDED, n) for n in range(3)]


def test_records_tell_the_truth(project: Project, faults: Path) -> None:
    """Success after a failure shows no error; a non-retryable error is `not-retryable`."""
    with Stem.from_config(faults) as stem:
        recovered_id = stem.enqueue("flaky_once")
        refused_id = stem.enqueue("refuse")
        project.start("worker", "-n", "w")
        recovered = stem.wait(recovered_id, timeout=30)
        refused = stem.wait(refused_id, timeout=30)
    assert (recovered.state, recovered.result, recovered.error) == (
        TaskState.SUCCEEDED,
        "recovered",
        None,
    )
    [earlier] = recovered.meta["attempts"]
    assert (earlier["attempt"], earlier["error"]["type"]) == (0, "ConnectionError")
    assert (refused.state, refused.attempt, refused.dead_letter_reason) == (
        TaskState.FAILED,
        0,
        "not-retryable",
    )


def _log_of(project: Project, proc: subprocess.Popen[bytes]) -> str:
    index = project.processes.index(proc)
    return (project.root / f"proc-{index}.log").read_text(errors="replace")
