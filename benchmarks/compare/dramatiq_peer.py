"""Dramatiq: RedisBroker with the Results middleware, 2 processes x 8 threads."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from .harness import BIN, System, chunks, drop_keys, p50_sync, timed

DRAMATIQ_APP = """
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

backend = RedisBackend(url="{url}", namespace="dr{tag}-results")
broker = RedisBroker(url="{url}", namespace="dr{tag}")
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0, queue_name="q{tag}")
def noop():
    return time.time()
"""


class DramatiqPeer(System):
    label = "Dramatiq (2 processes x 8 threads)"
    note = "dramatiq --processes 2 --threads 8; Results middleware stores each return value"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.sent: list[Any] = []  # result keys are hashes without a prefix: deleted one by one

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        (root / "cmpdramatiq.py").write_text(DRAMATIQ_APP.format(url=self.url, tag=self.tag))
        sys.path.insert(0, str(root))
        app = importlib.import_module("cmpdramatiq")
        self.backend, self.noop = app.backend, app.noop
        from dramatiq.results import ResultMissing

        self.missing = ResultMissing

    def send(self) -> Any:
        message = self.noop.send()
        self.sent.append(message)
        return message

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        return timed(lambda: [self.send() for _ in range(count)], count)

    def finish_of(self, message: Any) -> float | None:
        try:
            return float(self.backend.get_result(message, block=False))
        except self.missing:
            return None

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        return [self.finish_of(message) for message in handles]

    def p50_ms(self, samples: int) -> float:
        return p50_sync(self.send, self.finish_of, samples)

    def worker_commands(self) -> list[list[str]]:
        return [self.command(processes=2, threads=8)]

    def memory_command(self, concurrency: int) -> list[str]:
        return self.command(processes=1, threads=concurrency)

    def command(self, *, processes: int, threads: int) -> list[str]:
        dramatiq = [str(BIN / "dramatiq"), "cmpdramatiq"]
        return [*dramatiq, "--processes", str(processes), "--threads", str(threads)]

    def reset(self) -> None:
        client = redis.Redis.from_url(self.url)
        for messages in chunks(self.sent, 500):
            client.delete(*(self.backend.build_message_key(message) for message in messages))
        client.close()
        self.sent = []

    def close(self) -> None:
        self.reset()
        drop_keys(self.url, f"dr{self.tag}*")
