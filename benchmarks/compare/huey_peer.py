"""Huey: RedisHuey or SqliteHuey, one consumer with 2 worker processes (`-k process -w 2`)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .harness import BIN, System, p50_sync, timed

HUEY_APP = """
import time

from huey import RedisHuey, SqliteHuey

huey = {storage}


@huey.task()
def noop():
    return time.time()
"""


class HueyPeer(System):
    """Results are stored (Huey's default); `huey.flush()` empties this Huey's queue and results."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.sqlite = url.startswith("sqlite:")
        self.module = "cmphueysql" if self.sqlite else "cmphuey"
        kind = "SqliteHuey" if self.sqlite else "RedisHuey"
        self.label = f"Huey ({kind}, 2 worker processes)"
        self.note = "huey_consumer -k process -w 2; results stored (default)"

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        if self.sqlite:  # Huey's defaults: WAL, synchronous left at SQLite's default (FULL)
            storage = f'SqliteHuey("hq{self.tag}", filename="{root / "huey.db"}")'
        else:
            storage = f'RedisHuey("hq{self.tag}", url="{self.url}")'
        (root / f"{self.module}.py").write_text(HUEY_APP.format(storage=storage))
        sys.path.insert(0, str(root))
        app = importlib.import_module(self.module)
        self.huey, self.noop = app.huey, app.noop

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        return timed(lambda: [self.noop() for _ in range(count)], count)

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        return [handle.get(preserve=True) for handle in handles]

    def p50_ms(self, samples: int) -> float:
        return p50_sync(self.noop, lambda handle: handle.get(preserve=True), samples)

    def worker_commands(self) -> list[list[str]]:
        return [self.memory_command(2)]

    def memory_command(self, concurrency: int) -> list[str]:
        consumer = [str(BIN / "huey_consumer"), f"{self.module}.huey", "-q"]
        return [*consumer, "-k", "process", "-w", str(concurrency)]

    def reset(self) -> None:
        self.huey.flush()

    def close(self) -> None:
        self.huey.flush()
        if not self.sqlite:
            self.huey.storage.conn.close()
