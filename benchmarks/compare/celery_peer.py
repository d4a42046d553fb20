"""Celery: 2 prefork workers of -c 2, results in Redis, prefetch raised for short tasks."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .harness import BIN, System, drop_keys, p50_sync, timed

# global_keyprefix puts every broker and result key of this run under one prefix; the prefetch
# multiplier of 64 is what Celery's "Optimizing" guide suggests for many short tasks.
CELERY_APP = """
import time

from celery import Celery

app = Celery("cmpcelery", broker="{url}", backend="{url}")
app.conf.update(
    task_default_queue="cq{tag}",
    broker_transport_options={{"global_keyprefix": "cq{tag}:"}},
    result_backend_transport_options={{"global_keyprefix": "cq{tag}:"}},
    worker_prefetch_multiplier=64,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def noop():
    return time.time()
"""


class CeleryPeer(System):
    label = "Celery (prefork -c 2, results in Redis)"
    note = "2 workers -P prefork -c 2, prefetch multiplier 64, gossip/mingle/heartbeat off"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag

    def prepare(self, root: Path) -> None:
        super().prepare(root)
        (root / "cmpcelery.py").write_text(CELERY_APP.format(url=self.url, tag=self.tag))
        sys.path.insert(0, str(root))
        app = importlib.import_module("cmpcelery")
        self.app, self.noop = app.app, app.noop

    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        return timed(lambda: [self.noop.delay().id for _ in range(count)], count)

    def finish_of(self, task_id: str) -> float | None:
        meta = self.app.backend.get_task_meta(task_id, cache=False)
        return float(meta["result"]) if meta["status"] == "SUCCESS" else None

    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        return [self.finish_of(task_id) for task_id in handles]

    def p50_ms(self, samples: int) -> float:
        return p50_sync(lambda: self.noop.delay().id, self.finish_of, samples)

    def worker_commands(self) -> list[list[str]]:
        worker = [str(BIN / "celery"), "-A", "cmpcelery", "worker", "-P", "prefork", "-c", "2"]
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
        return [[*worker, "-n", f"w{i}{self.tag}@%h"] for i in range(2)]

    def reset(self) -> None:
        drop_keys(self.url, f"cq{self.tag}:celery-task-meta-*")

    def close(self) -> None:
        self.app.close()
        drop_keys(self.url, f"cq{self.tag}:*")
