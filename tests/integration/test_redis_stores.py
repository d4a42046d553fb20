"""Redis-only behaviour of the broker and backend: round trips, trimming, keys, real-time leases."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stemrun import redis_keys
from stemrun.backends.record import StatusRecord, Transition
from stemrun.backends.redis import RedisBackend
from stemrun.brokers.base import DeadLetter, Message
from stemrun.brokers.redis_streams import RedisStreamsBroker
from stemrun.state import TaskState
from stemrun.telemetry import Heartbeat


@pytest.fixture
def broker(redis_url: str, redis_namespace: str) -> Iterator[RedisStreamsBroker]:
    store = RedisStreamsBroker(redis_url, namespace=redis_namespace)
    yield store
    store.close()


@pytest.fixture
def backend(redis_url: str, redis_namespace: str) -> Iterator[RedisBackend]:
    store = RedisBackend(redis_url, namespace=redis_namespace)
    yield store
    store.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def count_commands(store: Any) -> list[str]:
    """Record the name of every command (or pipeline) the store's client sends from now on."""
    client, sent = store._redis, []
    execute, pipeline = client.execute_command, client.pipeline

    def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(*args, **options)

    def counted_pipeline(*args: Any, **options: Any) -> Any:
        sent.append("PIPELINE")
        return pipeline(*args, **options)

    client.execute_command, client.pipeline = counted, counted_pipeline
    return sent


def msgs(count: int, **fields: Any) -> list[Message]:
    return [Message(id=f"m{i}", queue="q", body=b"x", **fields) for i in range(count)]


def test_batches_are_one_round_trip_each(broker: RedisStreamsBroker) -> None:
    broker.fetch(["q"], 1, consumer="warm-up", lease_s=30)  # scripts loaded on first use
    broker.publish(msgs(1, priority=1))
    broker.ack(broker.fetch(["q"], 1, consumer="c", lease_s=30))
    sent = count_commands(broker)
    broker.publish(msgs(200, priority=3) + msgs(100, eta=time.time() + 60))
    got = broker.fetch(["q"], 150, consumer="c", lease_s=30)
    broker.extend(got, 60)
    broker.ack(got)
    assert len(got) == 150
    assert sent == ["EVALSHA"] * 4


def test_acknowledged_entries_are_deleted(broker: RedisStreamsBroker, raw: redis.Redis) -> None:
    broker.publish(msgs(300))
    while batch := broker.fetch(["q"], 64, consumer="c", lease_s=30):
        assert all(broker.ack(batch))
    ns = broker.namespace
    assert raw.xlen(redis_keys.stream(ns, "q", 0)) == 0
    assert raw.zcard(redis_keys.leases(ns, "q")) == 0
    assert raw.xpending(redis_keys.stream(ns, "q", 0), redis_keys.GROUP)["pending"] == 0


def test_every_key_is_in_the_namespace_and_documented(
    broker: RedisStreamsBroker, backend: RedisBackend, raw: redis.Redis
) -> None:
    backend.create([StatusRecord(id="a", task="t", state=TaskState.QUEUED, queue="q")])
    backend.put_worker(Heartbeat(id="w", host="h", pid=1), ttl_s=30)
    broker.publish([*msgs(2), Message(id="later", queue="q", body=b"", eta=time.time() + 60)])
    first, _leased = broker.fetch(["q"], 2, consumer="c", lease_s=30)
    entry = DeadLetter(
        id=first.id, queue="q", body=b"", reason="r", task=None, attempt=0, dead_at=1.0
    )
    broker.dead_letter(first, entry)
    found = [key.decode() for key in raw.scan_iter(match=f"{broker.namespace}:*")]
    assert len(found) >= 10
    documented = [_key_pattern(t, broker.namespace) for t in _ALL_KEYS]
    for key in found:
        assert any(pattern.fullmatch(key) for pattern in documented), key


_ALL_KEYS = {**redis_keys.BROKER_KEYS, **redis_keys.BACKEND_KEYS}


def _key_pattern(template: str, namespace: str) -> re.Pattern[str]:
    fields = {
        "ns": re.escape(namespace),
        "queue": "q",
        "priority": "[0-9]",
        "id": ".+",
        "key": ".+",
    }
    return re.compile(template.format(**fields))


def test_a_renewing_consumer_keeps_a_long_task(redis_url: str, redis_namespace: str) -> None:
    """Real clock: leases of 0.3 s renewed for 1.2 s are never taken; unrenewed ones are."""
    owner, thief = (RedisStreamsBroker(redis_url, namespace=redis_namespace) for _ in range(2))
    try:
        owner.publish(msgs(1))
        [held] = owner.fetch(["q"], 1, consumer="owner", lease_s=0.3)
        stolen = []
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            assert owner.extend([held], 0.3) == [True]
            stolen += thief.fetch(["q"], 1, consumer="thief", lease_s=30, block_s=0.1)
        assert stolen == []
        [taken] = thief.fetch(["q"], 1, consumer="thief", lease_s=30, block_s=1.0)
        assert (taken.id, taken.deliveries) == (held.id, 2)
        assert owner.extend([held], 0.3) == [False]
        assert owner.ack([held]) == [False]
        assert thief.ack([taken]) == [True]
    finally:
        owner.close()
        thief.close()


def test_due_delayed_messages_move_once(redis_url: str, redis_namespace: str) -> None:
    consumers = [RedisStreamsBroker(redis_url, namespace=redis_namespace) for _ in range(3)]
    consumers[0].publish(msgs(500, eta=time.time() + 0.2))
    got: list[str] = []
    lock = threading.Lock()

    def consume(broker: RedisStreamsBroker, name: str) -> None:
        idle_until = time.monotonic() + 1.0
        while time.monotonic() < idle_until:
            batch = broker.fetch(["q"], 7, consumer=name, lease_s=30, block_s=0.05)
            with lock:
                got.extend(d.id for d in batch)
            broker.ack(batch)

    threads = [threading.Thread(target=consume, args=(c, f"c{i}")) for i, c in enumerate(consumers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for consumer in consumers:
        consumer.close()
    assert sorted(got) == sorted(f"m{i}" for i in range(500))


def test_consumers_are_visible_and_forgotten_on_close(
    redis_url: str, redis_namespace: str, raw: redis.Redis
) -> None:
    broker = RedisStreamsBroker(redis_url, namespace=redis_namespace)
    broker.publish(msgs(2))
    held = broker.fetch(["q"], 1, consumer="worker-1", lease_s=30)
    stream = redis_keys.stream(redis_namespace, "q", 0)
    [pending] = raw.xpending_range(stream, redis_keys.GROUP, "-", "+", 10)
    assert pending["consumer"] == b"worker-1"
    broker.ack(held)
    broker.close()
    assert raw.xinfo_consumers(stream, redis_keys.GROUP) == []


def test_record_ttl_follows_expires_at(backend: RedisBackend, raw: redis.Redis) -> None:
    now = time.time()
    record = StatusRecord(id="a", task="t", state=TaskState.QUEUED, queue="q")
    backend.create([record])
    key = redis_keys.status(backend.namespace, "a")
    assert raw.pttl(key) == -1
    done = Transition(
        task_id="a", attempt=0, state=TaskState.SUCCEEDED, changes={"expires_at": now + 100}
    )
    assert backend.transition([done]) == [True]
    assert 100_000 < raw.pttl(key) <= 101_000
    backend.replace(record)
    assert raw.pttl(key) == -1


def test_backend_batches_round_trips(backend: RedisBackend) -> None:
    records = [
        StatusRecord(id=f"r{i}", task="t", state=TaskState.QUEUED, queue="q") for i in range(50)
    ]
    backend.create(records[:1])
    backend.transition([Transition(task_id="r0", attempt=0, state=TaskState.RUNNING)])
    sent = count_commands(backend)
    assert backend.create(records) == [False] + [True] * 49
    moves = [Transition(task_id=r.id, attempt=0, state=TaskState.RUNNING) for r in records]
    assert backend.transition(moves) == [True] * 50
    assert sent == ["EVALSHA", "PIPELINE", "EVALSHA"]


def test_outcome_after_own_running_write_skips_the_read(backend: RedisBackend) -> None:
    records = [
        StatusRecord(id=f"o{i}", task="t", state=TaskState.QUEUED, queue="q") for i in range(5)
    ]
    backend.create(records)
    running = [Transition(task_id=r.id, attempt=0, state=TaskState.RUNNING) for r in records]
    assert backend.transition(running) == [True] * 5
    sent = count_commands(backend)
    done = [Transition(task_id=r.id, attempt=0, state=TaskState.SUCCEEDED) for r in records]
    assert backend.transition(done) == [True] * 5
    assert sent == ["EVALSHA"], "the records this backend just wrote need no read"
    assert {backend.get(r.id).state for r in records} == {TaskState.SUCCEEDED}  # type: ignore[union-attr]


def test_a_remembered_write_overtaken_by_another_writer_is_still_fenced(
    redis_url: str, redis_namespace: str, backend: RedisBackend
) -> None:
    backend.create([StatusRecord(id="s", task="t", state=TaskState.QUEUED, queue="q")])
    assert backend.transition([Transition(task_id="s", attempt=0, state=TaskState.RUNNING)])
    other = RedisBackend(redis_url, namespace=redis_namespace)
    try:  # a newer owner (attempt 1) finishes first: its result must win
        winner = Transition(
            task_id="s", attempt=1, state=TaskState.SUCCEEDED, changes={"result": 1}
        )
        assert other.transition([winner]) == [True]
    finally:
        other.close()
    late = Transition(task_id="s", attempt=0, state=TaskState.FAILED, changes={"result": 0})
    assert backend.transition([late]) == [False]
    stored = backend.get("s")
    assert stored is not None and (stored.state, stored.result) == (TaskState.SUCCEEDED, 1)
