"""The ceiling: a bare redis-py Streams queue with no framework around it."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from .harness import System, batches, drop_keys, p50_sync, timed

# The consumer a framework-free Streams queue needs: read 100, run the no-op, store each return
# value and ack the lot in one pipelined round trip.
CONSUMER = """
import sys
import time

import redis

url, stream, group, name, prefix = sys.argv[1:6]
client = redis.Redis.from_url(url)
while True:
    reply = client.xreadgroup(group, name, {stream: ">"}, count=100, block=1000)
    if not reply:
        continue
    pipe = client.pipeline(transaction=False)
    entry_ids = []
    for _, entries in reply:
        for entry_id, fields in entries:
            pipe.set(prefix + fields[b"id"].decode(), repr(time.time()))
            entry_ids.append(entry_id)
    pipe.xack(stream, group, *entry_ids)
    pipe.execute()
"""


class StreamsCeiling(System):
    label = "raw redis-py Streams (XREADGROUP 100 + pipelined SET + XACK)"
    note = "batch = pipelined XADD, 1,000 per round trip"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.stream = f"raw{tag}"
        self.results = f"raw{tag}:r:"
        self.ids = itertools.count()

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        (root / "streams_consumer.py").write_text(CONSUMER)
        self.client = redis.Redis.from_url(self.url)
        self.client.xgroup_create(self.stream, "workers", id="0", mkstream=True)

    def publish(self) -> str:
        task_id = str(next(self.ids))
        self.client.xadd(self.stream, {"id": task_id})
        return task_id

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        return timed(lambda: [self.publish() for _ in range(count)], count)

    def enqueue_many(self, count: int) -> tuple[float, list[Any]]:
        def pipelined() -> list[str]:
            task_ids: list[str] = []
            for size in batches(count):
                pipe = self.client.pipeline(transaction=False)
                for _ in range(size):
                    task_ids.append(str(next(self.ids)))
                    pipe.xadd(self.stream, {"id": task_ids[-1]})
                pipe.execute()
            return task_ids

        return timed(pipelined, count)

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        values = self.client.mget([self.results + task_id for task_id in handles])
        return [None if value is None else float(value) for value in values]

    def p50_ms(self, samples: int) -> float:
        return p50_sync(self.publish, lambda task_id: self.finishes([task_id])[0], samples)

    def worker_commands(self) -> list[list[str]]:
        script = str(self.root / "streams_consumer.py")
        args = [self.url, self.stream, "workers"]
        return [[sys.executable, script, *args, f"c{i}", self.results] for i in range(2)]

    def reset(self) -> None:
        self.client.xtrim(self.stream, maxlen=0, approximate=False)
        drop_keys(self.url, f"{self.results}*")

    def close(self) -> None:
        self.client.delete(self.stream)
        drop_keys(self.url, f"{self.results}*")
        self.client.close()
