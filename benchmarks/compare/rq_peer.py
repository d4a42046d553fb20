"""RQ: 2 `rq worker` processes of SimpleWorker, the class RQ's performance notes name for jobs of a
few milliseconds (the default Worker forks a child per job and drains ~100 no-ops/s here)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from .harness import BIN, System, batches, chunks, drop_keys, p50_sync, timed

CLEAN_LOCK = "rq:clean_groups"
RQ_TASKS = "import time\n\n\ndef noop():\n    return time.time()\n"


class RqPeer(System):
    label = "RQ (2 SimpleWorker processes)"
    note = "rq worker -w rq.worker.SimpleWorker (no fork per job), results stored (RQ always does)"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.job_ids: list[str] = []

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        from rq import Queue

        (root / "cmprq.py").write_text(RQ_TASKS)
        sys.path.insert(0, str(root))
        self.noop = importlib.import_module("cmprq").noop
        self.client = redis.Redis.from_url(self.url)
        self.queue = Queue(f"rq{self.tag}", connection=self.client)
        self.lock_existed = bool(self.client.exists(CLEAN_LOCK))

    def send(self) -> Any:
        job = self.queue.enqueue(self.noop)
        self.job_ids.append(job.id)
        return job

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        return timed(lambda: [self.send() for _ in range(count)], count)

    def enqueue_many(self, count: int) -> tuple[float, list[Any]]:
        from rq import Queue

        def bulk() -> list[Any]:
            jobs: list[Any] = []
            for size in batches(count):
                jobs += self.queue.enqueue_many([Queue.prepare_data(self.noop)] * size)
            return jobs

        rate, jobs = timed(bulk, count)
        self.job_ids += [job.id for job in jobs]
        return rate, jobs

    def finish_of(self, job: Any) -> float | None:
        result = job.latest_result()
        return None if result is None else float(result.return_value)

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        return [self.finish_of(job) for job in handles]

    def p50_ms(self, samples: int) -> float:
        return p50_sync(self.send, self.finish_of, samples)

    def worker_commands(self) -> list[list[str]]:
        worker = [str(BIN / "rq"), "worker", "-u", self.url, "-w", "rq.worker.SimpleWorker", "-q"]
        return [[*worker, "-n", f"w{i}{self.tag}", f"rq{self.tag}"] for i in range(2)]

    def reset(self) -> None:
        """Delete this run's jobs and results by id: the rq:job:* space is shared by all queues."""
        self.queue.empty()  # type: ignore[no-untyped-call]
        for ids in chunks(self.job_ids, 500):
            self.client.delete(*(f"rq:job:{i}" for i in ids), *(f"rq:results:{i}" for i in ids))
        self.job_ids = []

    def close(self) -> None:
        self.reset()
        drop_keys(self.url, f"rq:*rq{self.tag}*", f"rq:*w?{self.tag}*")
        self.client.srem("rq:queues", f"rq:queue:rq{self.tag}")
        self.client.srem("rq:workers", *(f"rq:worker:w{i}{self.tag}" for i in range(2)))
        if not self.lock_existed:  # the registry-cleaning lock our workers took
            self.client.delete(CLEAN_LOCK)
        self.client.close()
