"""SAQ on Redis: 2 worker processes x 10 concurrency."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .harness import BIN, System, drop_keys, p50_async, timed

TERMINAL = ("complete", "failed", "aborted")  # Status is a str enum: compare by value
SAQ_APP = """
import time

from saq import Queue

queue = Queue.from_url("{url}", name="sq{tag}")


async def noop(ctx):
    return time.time()


settings = {{"queue": queue, "functions": [noop], "concurrency": 10}}
"""


class SaqPeer(System):
    label = "SAQ (2 processes x 10 async)"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.loop = asyncio.new_event_loop()
        self.swept: set[str] = set()

    @property
    def note(self) -> str:  # type: ignore[override]
        swept = f"; {len(self.swept)} jobs marked aborted by its sweeper" if self.swept else ""
        return f"saq --workers 2, concurrency 10; the job record holds the result{swept}"

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        (root / "cmpsaq.py").write_text(SAQ_APP.format(url=self.url, tag=self.tag))
        sys.path.insert(0, str(root))
        self.queue = importlib.import_module("cmpsaq").queue
        self.loop.run_until_complete(self.queue.connect())

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        async def send() -> list[Any]:
            return [(await self.queue.enqueue("noop")).key for _ in range(count)]

        return timed(lambda: self.loop.run_until_complete(send()), count)

    async def read(self, keys: Sequence[str]) -> list[float | None]:
        return [self.finish_time(job) for job in await self.queue.jobs(keys)]

    def finish_time(self, job: Any) -> float | None:
        """The returned time; for a job SAQ's sweeper aborted after it ran, SAQ's completion time.

        At start-up the sweeper can take a job that a worker has just dequeued but not yet marked
        active for a stuck one, and marks it aborted although it ran; such jobs are counted.
        """
        from saq.job import Status

        if job is None or job.status not in TERMINAL:
            return None
        if job.status == Status.COMPLETE:
            return float(job.result)
        self.swept.add(job.key)
        return job.completed / 1000 if job.completed else time.time()

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        return self.loop.run_until_complete(self.read(handles))

    async def enqueue_one(self) -> str:
        return str((await self.queue.enqueue("noop")).key)

    async def finish_of(self, key: str) -> float | None:
        return (await self.read([key]))[0]

    def p50_ms(self, samples: int) -> float:
        return self.loop.run_until_complete(p50_async(self.enqueue_one, self.finish_of, samples))

    def worker_commands(self) -> list[list[str]]:
        return [[str(BIN / "saq"), "cmpsaq.settings", "--workers", "2", "--quiet"]]

    def reset(self) -> None:
        drop_keys(self.url, f"saq:job:sq{self.tag}:*")

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())
        self.loop.close()
        drop_keys(self.url, f"saq:*sq{self.tag}*")
