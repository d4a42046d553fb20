"""Broker and result backend on one Redis: one script per enqueue, no read before `running`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stemrun.backends.record import Transition
from stemrun.client import Stem
from stemrun.config import config_from_mapping
from stemrun.shared_store import fetch_for, single_write
from stemrun.state import TaskState
from stemrun.stores import open_backend, open_broker
from tests.integration.test_redis_reconnect import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    own = RedisServer(dir=tmp_path)
    own.start()
    yield own
    own.kill()


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_one_store_only_when_the_urls_are_the_same(server: RedisServer) -> None:
    broker = open_broker(server.url)
    assert single_write(broker, open_backend(server.url)) is not None
    other_db = server.url.rsplit("/", 1)[0] + "/1"
    assert single_write(broker, open_backend(other_db)) is None


def test_fetch_reads_the_records_so_running_needs_no_read(
    server: RedisServer, tmp_path: Path
) -> None:
    config = config_from_mapping(
        {
            "version": 1,
            "broker": server.url,
            "queues": {"default": {}},
            "tasks": {"noop": {"handler": "os:getpid"}},
        },
        root_dir=tmp_path,
    )
    client = redis.Redis.from_url(server.url)
    with Stem(config) as stem:
        ids = [stem.enqueue("noop")]  # loads the script (a first EVALSHA misses)
        evals = calls(client, "evalsha")
        ids += [stem.enqueue("noop") for _ in range(2)]
        assert calls(client, "evalsha") - evals == 2  # record and publish: one script each
        fetch = fetch_for(stem.broker, stem.backend)
        deliveries = fetch(["default"], 10, consumer="w", lease_s=30)
        assert sorted(d.id for d in deliveries) == sorted(ids)
        reads = calls(client, "hmget")
        starts = [
            Transition(task_id=d.id, attempt=0, state=TaskState.RUNNING, receipt=d.receipt)
            for d in deliveries
        ]
        assert stem.backend.transition(starts) == [True, True, True]
        assert calls(client, "hmget") == reads
        assert {stem.status(i).state for i in ids} == {TaskState.RUNNING}
