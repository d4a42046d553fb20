"""Enqueue is atomic whatever crashes: the producer, the broker, the backend (docs/guarantees.md).

Each crash is placed at the exact point between writing the records and publishing, with the
test hook `stemrun.outbox.after_record`, in a producer process of its own; the stores are real
(SQLite files and redis-servers this test starts and kills).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stemrun.client import Stem
from stemrun.config import load_config
from stemrun.errors import BrokerError
from stemrun.outbox import GRACE_S, sweep
from stemrun.state import TaskState
from tests.e2e.conftest import Project
from tests.integration.test_redis_reconnect import RedisServer

SPLIT_YAML = """
version: 1
broker: {broker}
result_backend: {backend}
queues:
  default: {{}}
tasks:
  record: {{handler: "e2etasks:record"}}
"""

CRASHING_PRODUCER = """
import os, sys
from stemrun import outbox
from stemrun.client import Stem

outbox.after_record = lambda: {crash}
with Stem.from_config("stem.yaml") as stem:
    stem.enqueue("record", {{"n": 1}}, task_id="the-task")
"""


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, RedisServer]]:
    """A broker and a backend redis-server of this test's own (the backend's with an fsynced
    append-only file, so a SIGKILL loses nothing it acknowledged)."""
    made = {
        "broker": RedisServer(dir=_dir(tmp_path / "broker")),
        "backend": RedisServer(
            dir=_dir(tmp_path / "backend"), args=["--appendonly", "yes", "--appendfsync", "always"]
        ),
    }
    for server in made.values():
        server.start()
    yield made
    for server in made.values():
        server.kill()


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


def _configure(project: Project, broker: str, backend: str) -> Path:
    path = project.root / "stem.yaml"
    path.write_text(textwrap.dedent(SPLIT_YAML.format(broker=broker, backend=backend)))
    return path


def _produce(project: Project, crash: str) -> subprocess.CompletedProcess[str]:
    script = CRASHING_PRODUCER.format(crash=crash)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _sweep_as_a_worker_would_later(path: Path) -> int:
    with Stem(load_config(path)) as stem:
        return sweep(stem.broker, stem.backend, time.time() + GRACE_S + 1)


def _drain(project: Project) -> None:
    done = project.run("worker", "--burst")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("stores", ["redis+sqlite", "sqlite+redis"])
def test_producer_killed_between_record_and_publish(
    project: Project, stores: str, redis_url: str, redis_namespace: str
) -> None:
    """Broker and backend apart: the record is kept with its message; a retry publishes no
    copy; a sweep makes it run, once."""
    sqlite = "sqlite:///.stem/stem.db"
    broker, backend = (redis_url, sqlite) if stores == "redis+sqlite" else (sqlite, redis_url)
    path = _configure(project, broker, backend)
    path.write_text(path.read_text() + f"namespace: {redis_namespace}\n")

    crashed = _produce(project, "os._exit(9)")
    assert crashed.returncode == 9, crashed.stderr
    with Stem(load_config(path)) as stem:
        assert stem.status("the-task").state is TaskState.QUEUED
        assert stem.enqueue("record", {"n": 1}, task_id="the-task") == "the-task"
        assert _sweep_as_a_worker_would_later(path) == 1
        assert _sweep_as_a_worker_would_later(path) == 0  # swept once only
        _drain(project)
        assert stem.status("the-task").state is TaskState.SUCCEEDED
    assert project.ledger_lines() == ["1"]


def test_broker_down_raises_its_error_and_leaves_nothing(
    project: Project, servers: dict[str, RedisServer]
) -> None:
    """The publish fails: the new records are removed again and the publish error is raised."""
    path = _configure(project, servers["broker"].url, servers["backend"].url)
    servers["broker"].kill()
    with Stem(load_config(path)) as stem:
        with pytest.raises(BrokerError):
            stem.enqueue("record", {"n": 1}, task_id="the-task")
        assert stem.status("the-task").state is TaskState.UNKNOWN
        servers["broker"].start()
        assert stem.enqueue("record", {"n": 1}, task_id="the-task") == "the-task"
    _drain(project)
    assert project.ledger_lines() == ["1"]


def test_broker_and_backend_killed_mid_enqueue(
    project: Project, servers: dict[str, RedisServer]
) -> None:
    """Both stores die after the records were written: the caller sees the publish error, and
    once the stores are back the task runs, once, also when the caller retries."""
    path = _configure(project, servers["broker"].url, servers["backend"].url)
    pids = [server.proc.pid for server in servers.values() if server.proc is not None]
    kill = f"[os.kill(pid, 9) for pid in {pids}]"
    crashed = _produce(project, kill)
    assert crashed.returncode == 1
    assert "BrokerUnavailable" in crashed.stderr and "BackendUnavailable" not in crashed.stderr
    for server in servers.values():
        server.proc.wait(timeout=10)  # type: ignore[union-attr]
        server.start()
    with Stem(load_config(path)) as stem:
        assert stem.status("the-task").state is TaskState.QUEUED
        assert stem.enqueue("record", {"n": 1}, task_id="the-task") == "the-task"
    assert _sweep_as_a_worker_would_later(path) == 1
    _drain(project)
    assert project.ledger_lines() == ["1"]


STREAMING_PRODUCER = """
import itertools, time
from stemrun.client import Stem
from stemrun.enqueue import EnqueueOptions
from stemrun.errors import StemrunError

# As docs/scaling.md advises: on an error, retry the same batch with the same task ids.
with Stem.from_config("stem.yaml") as stem, open("acked.txt", "a") as acked:
    for batch in itertools.count():
        numbers = range(batch * 10, batch * 10 + 10)
        items = [("record", {{"n": n}}, EnqueueOptions(task_id=f"t{{n}}")) for n in numbers]
        while True:
            try:
                stem.enqueue_many(items)
                break
            except StemrunError:
                time.sleep(0.05)
        acked.write("".join(f"{{n}}\\n" for n in numbers))
        acked.flush()
"""


def _acked(project: Project) -> set[int]:
    path = project.root / "acked.txt"
    return {int(line) for line in path.read_text().split()} if path.exists() else set()


def _stream(project: Project) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", STREAMING_PRODUCER.format()],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_acks(project: Project, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(_acked(project)) < count:
        assert time.monotonic() < deadline, "the producer acknowledged too few tasks"
        time.sleep(0.05)


def test_redis_killed_during_enqueues_loses_no_acknowledged_task(
    project: Project, servers: dict[str, RedisServer]
) -> None:
    """One Redis for both roles, SIGKILLed mid-stream while the producer retries failed
    batches: every acknowledged task runs, once, and no record is left `queued`."""
    server = servers["backend"]  # the one with an fsynced append-only file
    _configure(project, server.url, server.url)
    producer = _stream(project)
    _wait_for_acks(project, 2000)
    server.kill()
    server.start()
    _wait_for_acks(project, len(_acked(project)) + 1000)
    producer.kill()
    producer.wait(timeout=30)
    _drain(project)
    ran = [int(line) for line in project.ledger_lines()]
    assert _acked(project) <= set(ran), "an acknowledged task never ran"
    assert len(ran) == len(set(ran)), "a task ran twice"
    client = redis.Redis.from_url(server.url)
    states = {json.loads(client.hget(key, "d"))["state"] for key in client.scan_iter("*:status:*")}
    assert states == {"succeeded"}


def test_producer_killed_during_enqueues_leaves_no_orphan(
    project: Project, redis_url: str, redis_namespace: str
) -> None:
    """One SQLite file for both roles, the producer SIGKILLed mid-stream: every record written
    has its message, so every task whose record exists runs, once."""
    path = _configure(project, "sqlite:///.stem/stem.db", "sqlite:///.stem/stem.db")
    producer = _stream(project)
    _wait_for_acks(project, 2000)
    producer.kill()
    producer.wait(timeout=30)
    _drain(project)
    ran = [int(line) for line in project.ledger_lines()]
    with Stem(load_config(path)) as stem:
        records = stem.backend.list_records(limit=100_000)  # type: ignore[attr-defined]
    assert {r.state for r in records} == {TaskState.SUCCEEDED}
    assert len(records) == len(ran) == len(set(ran))
    assert _acked(project) <= set(ran)
