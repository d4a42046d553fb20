"""`stemrun worker` on Redis, run as a user does: crashes, long tasks, a restarted server, bad URLs.

Each test uses its own namespace on the shared Redis (or its own redis-server) and removes only
its own keys.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from stemrun.client import Stem
from stemrun.errors import StemrunError
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until
from tests.integration.test_redis_reconnect import RedisServer, free_port

REDIS_YAML = """
version: 1
broker: {url}
namespace: {namespace}
queues:
  default: {{}}
tasks:
  record: {{handler: "e2etasks:record", visibility_timeout: 3s}}
  long: {{handler: "e2etasks:record", visibility_timeout: 1s, max_retries: 0}}
workers:
  default:
    queues: [default]
    concurrency: 2
"""


def use_redis(project: Project, url: str, namespace: str) -> Path:
    path = project.root / "stem.yaml"
    path.write_text(REDIS_YAML.format(url=url, namespace=namespace))
    return path


def all_succeeded(stem: Stem, ids: list[str]) -> bool:
    return all(stem.status(i).state is TaskState.SUCCEEDED for i in reversed(ids))


def test_sigkilled_workers_lose_nothing(
    project: Project, redis_url: str, redis_namespace: str
) -> None:
    """2,000 tasks, 3 workers, one SIGKILLed every 1.5 s and restarted: all succeed."""
    total = 2000
    with Stem.from_config(use_redis(project, redis_url, redis_namespace)) as stem:
        ids = stem.enqueue_many([("record", {"n": n, "sleep": 0.03}) for n in range(total)])
        workers = [project.start("worker", "-n", f"w{i}") for i in range(3)]
        kills, rng = 0, random.Random(7)
        wait_until(lambda: len(project.ledger_lines()) > 100, 60, "workers never started")
        while len(project.ledger_lines()) < total * 0.8 and kills < 10:
            victim = rng.randrange(3)
            os.killpg(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait(timeout=10)
            kills += 1
            workers[victim] = project.start("worker", "-n", f"w{victim}-{kills}")
            time.sleep(1.5)
        wait_until(lambda: all_succeeded(stem, ids), 120, "not all succeeded:\n" + project.logs())
        states = collections.Counter(stem.status(i).state for i in ids)
    runs = collections.Counter(int(line) for line in project.ledger_lines())
    duplicates = sum(1 for count in runs.values() if count > 1)
    print(f"{kills} kills; tasks run twice (in flight at a kill): {duplicates}")
    assert states == {TaskState.SUCCEEDED: total}
    assert set(runs) == set(range(total)), "a task never ran"
    # Only what a killed worker held (2 running + 2 buffered) can run again, once.
    assert kills >= 3
    assert duplicates <= 4 * kills and max(runs.values()) <= 2


def test_long_task_on_a_live_worker_runs_once(
    project: Project, redis_url: str, redis_namespace: str
) -> None:
    """A task running 3x its visibility_timeout is never redelivered while its lease renews."""
    with Stem.from_config(use_redis(project, redis_url, redis_namespace)) as stem:
        for name in ("first", "second"):
            project.start("worker", "-n", name)
        task_id = stem.enqueue("long", args={"n": 1, "sleep": 3.0})
        status = stem.wait(task_id, timeout=60)
        time.sleep(1.5)  # a wrongful redelivery would run it again by now
    assert (status.state, status.attempt) == (TaskState.SUCCEEDED, 0)
    assert project.ledger_lines() == ["1"]
    assert "redelivered" not in project.logs() and "lost the lease" not in project.logs()


def enqueue(stem: Stem, count: int, first: int) -> list[str]:
    """Enqueue tasks one at a time; a refused enqueue was not acknowledged and is not counted."""
    ids: list[str] = []
    while len(ids) < count:
        try:
            ids.append(stem.enqueue("record", args={"n": first + len(ids)}))
        except StemrunError:
            time.sleep(0.1)
    return ids


def test_redis_restart_under_load(project: Project, tmp_path: Path) -> None:
    """SIGKILL redis-server (AOF on) mid-run and restart it: workers resume, nothing is lost."""
    server = RedisServer(dir=tmp_path, args=["--appendonly", "yes"])
    server.start()
    try:
        with Stem.from_config(use_redis(project, server.url, "restart")) as stem:
            workers = [project.start("worker", "-n", name) for name in ("first", "second")]
            ids = enqueue(stem, 300, 0)
            wait_until(lambda: len(project.ledger_lines()) >= 50, 60, "workers never started")
            # Both running: a worker that cannot reach its stores at start exits 1, by design.
            wait_until(lambda: project.logs().count(" consuming ") == 2, 60, "a worker is slow")
            server.kill()
            with pytest.raises(StemrunError, match="Redis is unreachable"):
                stem.enqueue("record", args={"n": -1})
            time.sleep(1.0)  # with the failed enqueue, longer than the client's retries
            server.start()
            ids += enqueue(stem, 300, 300)
            wait_until(lambda: all_succeeded(stem, ids), 90, "lost tasks:\n" + project.logs())
        assert all(worker.poll() is None for worker in workers), "a worker gave up"
        assert "Redis is unreachable" in project.logs(), "the outage went unnoticed"
        assert {int(n) for n in project.ledger_lines()} >= set(range(0, 600, 7))
    finally:
        project.stop_all()
        server.kill()


@pytest.mark.parametrize("command", [["enqueue", "record", "-a", "n=1"], ["worker", "--burst"]])
def test_unreachable_redis_exits_1_naming_the_masked_url(
    project: Project, command: list[str]
) -> None:
    port = free_port()
    use_redis(project, f"redis://:hunter2@127.0.0.1:{port}/0", "nowhere")
    done = project.run(*command)
    assert done.returncode == 1, done.stderr
    where = re.escape(f"redis://:***@127.0.0.1:{port}/0")
    assert re.search(
        rf"(broker|result backend) {where}: connect: Redis is unreachable", done.stderr
    )
    assert "hunter2" not in done.stderr + done.stdout
