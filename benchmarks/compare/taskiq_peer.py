"""Taskiq with taskiq-redis's Streams broker and Redis result backend, 2 processes x 10 async."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .harness import BIN, System, drop_keys, p50_async, timed

TASKIQ_APP = """
import time

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

# consumer_id "0": the group also delivers what was published before it existed.
broker = RedisStreamBroker(
    "{url}", queue_name="tq{tag}", consumer_group_name="tq{tag}", consumer_id="0"
).with_result_backend(RedisAsyncResultBackend("{url}", prefix_str="tq{tag}-res"))


@broker.task
async def noop() -> float:
    return time.time()
"""


class TaskiqPeer(System):
    label = "Taskiq + taskiq-redis Streams (2 processes x 10 async)"
    note = "taskiq worker --workers 2 --max-async-tasks 10; RedisAsyncResultBackend"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.loop = asyncio.new_event_loop()

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        (root / "cmptaskiq.py").write_text(TASKIQ_APP.format(url=self.url, tag=self.tag))
        sys.path.insert(0, str(root))
        app = importlib.import_module("cmptaskiq")
        self.broker, self.noop = app.broker, app.noop
        from taskiq_redis.exceptions import ResultIsMissingError

        self.missing = ResultIsMissingError
        self.loop.run_until_complete(self.broker.startup())

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        async def send() -> list[Any]:
            return [await self.noop.kiq() for _ in range(count)]

        return timed(lambda: self.loop.run_until_complete(send()), count)

    async def finish_of(self, task: Any) -> float | None:
        try:
            result = await self.broker.result_backend.get_result(task.task_id)
        except self.missing:
            return None
        return float(result.return_value)

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        async def read() -> list[float | None]:
            found: list[float | None] = []
            for start in range(0, len(handles), 100):
                chunk = handles[start : start + 100]
                found += await asyncio.gather(*(self.finish_of(task) for task in chunk))
            return found

        return self.loop.run_until_complete(read())

    def p50_ms(self, samples: int) -> float:
        return self.loop.run_until_complete(p50_async(self.noop.kiq, self.finish_of, samples))

    def worker_commands(self) -> list[list[str]]:
        taskiq = [str(BIN / "taskiq"), "worker", "cmptaskiq:broker", "--log-level", "WARNING"]
        return [[*taskiq, "--workers", "2", "--max-async-tasks", "10"]]

    def reset(self) -> None:
        drop_keys(self.url, f"tq{self.tag}-res:*")
        self.loop.run_until_complete(self.trim())

    async def trim(self) -> None:
        from redis.asyncio import Redis

        async with Redis(connection_pool=self.broker.connection_pool) as client:
            await client.xtrim(f"tq{self.tag}", maxlen=0, approximate=False)

    def close(self) -> None:
        self.loop.run_until_complete(self.broker.shutdown())
        self.loop.close()
        drop_keys(self.url, f"tq{self.tag}*", f"autoclaim:tq{self.tag}:*")
