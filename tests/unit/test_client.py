"""The producer API on in-memory stores: what `Stem` publishes, records and refuses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import DeadLetter
from stemrun.brokers.memory import MemoryBroker
from stemrun.client import EnqueueOptions, Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.envelope import decode
from stemrun.errors import TaskNotRegistered, UnknownQueue, UsageError, WaitTimeout
from stemrun.state import TaskState


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stem(tmp_path: Path, clock: ManualClock) -> Iterator[Stem]:
    config = config_from_mapping(
        {
            "broker": "memory://",
            "queues": {"default": {}, "mail": {}},
            "tasks": {
                "mail.send": {"handler": "x:y", "queue": "mail", "priority": 3, "expires": "1h"},
                "add": {"handler": "x:add"},
            },
        },
        root_dir=tmp_path,
    )
    broker, backend = MemoryBroker(clock=clock), MemoryBackend(clock=clock)
    with Stem(config, broker=broker, backend=backend, clock=clock) as client:
        yield client


def fetch_all(stem: Stem, queues: list[str]) -> list[bytes]:
    return [d.body for d in stem.broker.fetch(queues, 100, consumer="t", lease_s=30)]


def test_enqueue_publishes_an_envelope_with_the_task_defaults(
    stem: Stem, clock: ManualClock
) -> None:
    task_id = stem.enqueue("mail.send", {"to": "a@b.c"}, headers={"tenant": "billing"})
    [raw] = fetch_all(stem, ["mail"])
    env = decode(raw)
    assert (env.id, env.task, env.queue, env.priority) == (task_id, "mail.send", "mail", 3)
    assert env.args == {"to": "a@b.c"} and env.headers == {"tenant": "billing"}
    assert env.expires_at == clock.now() + 3600
    status = stem.status(task_id)
    assert status.state is TaskState.QUEUED and status.args == {"to": "a@b.c"}


def test_countdown_delays_delivery(stem: Stem, clock: ManualClock) -> None:
    stem.enqueue("add", countdown=10)
    assert fetch_all(stem, ["default"]) == []
    clock.advance(10)
    assert len(fetch_all(stem, ["default"])) == 1


def test_eta_needs_a_timezone_and_excludes_countdown(stem: Stem) -> None:
    with pytest.raises(UsageError, match="timezone"):
        stem.enqueue("add", eta=datetime(2030, 1, 1))
    with pytest.raises(UsageError, match="either countdown or eta"):
        stem.enqueue("add", countdown=1, eta=datetime(2030, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.enqueue("nope"), TaskNotRegistered),
        (lambda s: s.enqueue("add", queue="elsewhere"), UnknownQueue),
        (lambda s: s.enqueue("add", {"x": object()}), UsageError),
        (lambda s: s.enqueue("add", {"x": float("nan")}), UsageError),
        (lambda s: s.enqueue("add", priority=10), UsageError),
        (lambda s: s.enqueue_many([("add", {}), ("nope", {})]), TaskNotRegistered),
    ],
)
def test_bad_input_publishes_nothing(stem: Stem, call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call(stem)  # type: ignore[operator]
    assert fetch_all(stem, ["default", "mail"]) == []


def test_an_existing_id_is_not_published_twice(stem: Stem) -> None:
    first = stem.enqueue("add", task_id="fixed-id")
    second = stem.enqueue("add", task_id="fixed-id")
    assert first == second == "fixed-id"
    assert len(fetch_all(stem, ["default"])) == 1


def test_enqueue_many_keeps_order_and_options(stem: Stem) -> None:
    ids = stem.enqueue_many(
        [("add", {"x": 1}), ("add", {"x": 2}, EnqueueOptions(priority=9, task_id="hi"))]
    )
    assert ids[1] == "hi"
    bodies = [decode(b) for b in fetch_all(stem, ["default"])]
    assert [e.id for e in bodies] == ["hi", ids[0]], "priority 9 first"


def test_status_of_an_unknown_id(stem: Stem) -> None:
    assert stem.status(uuid.uuid4().hex).state is TaskState.UNKNOWN
    with pytest.raises(UsageError, match="unknown"):
        stem.wait("never-enqueued", timeout=0.1)


def test_wait_times_out_with_a_timeout_error(stem: Stem) -> None:
    task_id = stem.enqueue("add")
    with pytest.raises(TimeoutError):
        stem.wait(task_id, timeout=0.05)
    assert issubclass(WaitTimeout, TimeoutError)


def test_replay_resets_status_and_republishes(stem: Stem, clock: ManualClock) -> None:
    task_id = stem.enqueue("add", {"x": 1})
    [delivery] = stem.broker.fetch(["default"], 1, consumer="t", lease_s=30)
    entry = DeadLetter(
        id=task_id,
        queue="default",
        body=delivery.body,
        reason="max-retries-exhausted",
        task="add",
        attempt=3,
        dead_at=clock.now(),
    )
    assert stem.broker.dead_letter(delivery, entry)

    assert stem.replay(stem.dead_letters()) == [task_id]
    status = stem.status(task_id)
    assert status.state is TaskState.QUEUED and status.attempt == 0
    assert status.meta["replays"] == 1
    [raw] = fetch_all(stem, ["default"])
    assert decode(raw).attempt == 0
    assert stem.dead_letters() == []
