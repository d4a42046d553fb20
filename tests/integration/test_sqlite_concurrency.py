"""Several OS processes sharing one SQLite file: nothing lost, nothing delivered twice."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Event
from pathlib import Path

from stemrun.backends.record import StatusRecord, Transition
from stemrun.backends.sqlite import SqliteBackend
from stemrun.brokers.base import Message
from stemrun.brokers.sqlite import SqliteBroker
from stemrun.clock import ManualClock
from stemrun.state import TaskState

CTX = multiprocessing.get_context("spawn")
NS = "stem"


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _consume(url: str, done: Event, out: multiprocessing.Queue[list[str]]) -> None:
    broker = SqliteBroker(url, namespace=NS)
    backend = SqliteBackend(url, namespace=NS)
    seen: list[str] = []
    while True:
        batch = broker.fetch(["q"], 16, consumer=str(os.getpid()), lease_s=60, block_s=0.05)
        if not batch:
            if done.is_set():
                break
            continue
        running = [Transition(task_id=d.id, attempt=0, state=TaskState.RUNNING) for d in batch]
        backend.transition(running)
        finished = [Transition(task_id=d.id, attempt=0, state=TaskState.SUCCEEDED) for d in batch]
        assert all(backend.transition(finished))
        assert all(broker.ack(batch))
        seen.extend(d.id for d in batch)
    broker.close()
    backend.close()
    out.put(seen)


def _produce(url: str, prefix: str, count: int) -> None:
    broker = SqliteBroker(url, namespace=NS)
    backend = SqliteBackend(url, namespace=NS)
    for start in range(0, count, 50):
        names = [f"{prefix}{i}" for i in range(start, min(start + 50, count))]
        backend.create(
            [StatusRecord(id=n, task="t", state=TaskState.QUEUED, queue="q") for n in names]
        )
        broker.publish([Message(id=n, queue="q", body=n.encode()) for n in names])
    broker.close()
    backend.close()


def _lease_and_hang(url: str, leased: Event) -> None:
    broker = SqliteBroker(url, namespace=NS)
    assert len(broker.fetch(["q"], 10, consumer="doomed", lease_s=30)) == 10
    leased.set()
    time.sleep(600)


def test_processes_consume_every_message_exactly_once(tmp_path: Path) -> None:
    url = _url(tmp_path / "nested" / "stem.db")
    done, out = CTX.Event(), CTX.Queue()
    consumers = [CTX.Process(target=_consume, args=(url, done, out)) for _ in range(3)]
    producers = [CTX.Process(target=_produce, args=(url, f"p{i}-", 700)) for i in range(2)]
    for p in consumers + producers:
        p.start()
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    done.set()
    seen = [task_id for _ in consumers for task_id in out.get(timeout=60)]
    for p in consumers:
        p.join(60)
        assert p.exitcode == 0
    assert len(seen) == 1400
    assert set(seen) == {f"p{i}-{n}" for i in range(2) for n in range(700)}
    broker = SqliteBroker(url, namespace=NS)
    assert broker.fetch(["q"], 10, consumer="check", lease_s=1) == []
    backend = SqliteBackend(url, namespace=NS)
    record = backend.get("p1-699")
    assert record is not None and record.state == TaskState.SUCCEEDED


def test_messages_of_a_killed_consumer_are_redelivered(tmp_path: Path) -> None:
    url = _url(tmp_path / "stem.db")
    SqliteBroker(url, namespace=NS).publish(
        [Message(id=f"m{i}", queue="q", body=b"x") for i in range(10)]
    )
    leased = CTX.Event()
    doomed = CTX.Process(target=_lease_and_hang, args=(url, leased))
    doomed.start()
    try:
        assert leased.wait(60)
    finally:
        os.kill(doomed.pid or 0, signal.SIGKILL)
        doomed.join(60)
    # Instead of waiting out the 30 s lease, look at the store from 31 s in the future.
    later = SqliteBroker(url, namespace=NS, clock=ManualClock(start=time.time() + 31))
    redelivered = later.fetch(["q"], 100, consumer="survivor", lease_s=30)
    assert sorted(d.id for d in redelivered) == sorted(f"m{i}" for i in range(10))
    assert {d.deliveries for d in redelivered} == {2}


def test_concurrent_first_opens_agree_on_the_schema(tmp_path: Path) -> None:
    url = _url(tmp_path / "fresh.db")
    producers = [CTX.Process(target=_produce, args=(url, f"p{i}-", 100)) for i in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    broker = SqliteBroker(url, namespace=NS)
    got = broker.fetch(["q"], 1000, consumer="check", lease_s=30)
    assert len({d.id for d in got}) == len(got) == 400


def test_stale_worker_result_is_ignored_across_processes(tmp_path: Path) -> None:
    url = _url(tmp_path / "stem.db")
    first = SqliteBackend(url, namespace=NS)
    first.create([StatusRecord(id="a", task="t", state=TaskState.QUEUED, queue="q")])
    second = SqliteBackend(url, namespace=NS)
    assert second.transition([Transition(task_id="a", attempt=1, state=TaskState.SUCCEEDED)])
    assert first.transition([Transition(task_id="a", attempt=0, state=TaskState.FAILED)]) == [False]
    got = first.get("a")
    assert got is not None and got.state == TaskState.SUCCEEDED
