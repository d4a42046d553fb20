"""stemrun on Redis or the embedded SQLite store, with the process or the thread pool."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stemrun.client import Stem
from stemrun.config import load_config

from .harness import BIN, System, batches, drop_keys, p50_sync, timed

STEM_YAML = """
version: 1
broker: {url}
namespace: {namespace}
queues: {{default: {{}}}}
tasks:
  noop: {{handler: "stemtasks:noop", max_retries: 0}}
workers:
  default: {{queues: [default], concurrency: {concurrency}, pool: {pool}}}
"""
TASKS = "import time\n\n\ndef noop() -> float:\n    return time.time()\n"


class StemrunSystem(System):
    """Each repetition gets a fresh namespace (Redis) or database file (SQLite)."""

    def __init__(self, url: str, tag: str, *, pool: str, concurrency: int) -> None:
        self.url = url
        self.tag = tag
        self.pool = pool
        self.concurrency = concurrency
        self.rep = 0
        store = " (SQLite)" if self.sqlite else ""
        self.label = f"stemrun{store}, {pool} pool -c {concurrency}"
        self.note = "2 `stemrun worker` processes; writes a status record per task"

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite:")

    @property
    def namespace(self) -> str:
        return f"cmp{self.tag}{self.pool[0]}{self.rep}"

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        (root / "stemtasks.py").write_text(TASKS)
        self.open()

    def open(self) -> None:
        url = f"sqlite:///stem-{self.rep}.db" if self.sqlite else self.url
        config = STEM_YAML.format(
            url=url, namespace=self.namespace, concurrency=self.concurrency, pool=self.pool
        )
        (self.root / "stem.yaml").write_text(config)
        self.stem = Stem(load_config(self.root / "stem.yaml"))

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        return timed(lambda: [self.stem.enqueue("noop") for _ in range(count)], count)

    def enqueue_many(self, count: int) -> tuple[float, list[Any]]:
        def bulk() -> list[str]:
            ids: list[str] = []
            for size in batches(count):
                ids += self.stem.enqueue_many([("noop", {})] * size)
            return ids

        return timed(bulk, count)

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        records = self.stem.backend.get_many(list(handles))
        values: list[float | None] = []
        for task_id in handles:
            record = records.get(task_id)
            done = record is not None and record.finished_at is not None
            values.append(float(record.result) if done and record else None)
        return values

    def p50_ms(self, samples: int) -> float:
        return p50_sync(lambda: self.stem.enqueue("noop"), lambda i: self.finishes([i])[0], samples)

    def worker_commands(self) -> list[list[str]]:
        return [self.command(self.concurrency, f"w{i}") for i in range(2)]

    def memory_command(self, concurrency: int) -> list[str]:
        return self.command(concurrency, "mem")

    def command(self, concurrency: int, name: str) -> list[str]:
        stemrun = [str(BIN / "stemrun"), "worker", "--log-level", "warning"]
        return [*stemrun, "-c", str(concurrency), "--pool", self.pool, "-n", f"{name}{self.tag}"]

    def reset(self) -> None:
        self.drop()
        self.rep += 1
        self.open()

    def close(self) -> None:
        self.drop()

    def drop(self) -> None:
        self.stem.close()
        if not self.sqlite:
            drop_keys(self.url, f"{self.namespace}:*")
