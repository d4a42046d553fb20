"""Build the pool a worker plan asks for, and the client thread/async pools use for ctx.enqueue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from stemrun.client import Stem
from stemrun.config.model import Config
from stemrun.errors import HandlerImportError
from stemrun.registry import Registry
from stemrun.worker.job import Event
from stemrun.worker.plan import Plan
from stemrun.worker.pool import Pool


class ChildTaskClient:
    """ctx.enqueue for thread and async pools: one lazily opened client, used under a lock.

    (Process-pool children open their own client from the config file.)
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stem: Stem | None = None
        self._lock = threading.Lock()

    def enqueue(self, task: str, args: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
        """Enqueue a child task; raises what Stem.enqueue raises."""
        with self._lock:
            if self._stem is None:
                self._stem = Stem(self._config)
            return self._stem.enqueue(task, dict(args) if args else None, **options)

    def close(self) -> None:
        """Close the client if it was ever opened."""
        with self._lock:
            if self._stem is not None:
                self._stem.close()
                self._stem = None


def make_pool(
    plan: Plan,
    config: Config,
    registry: Registry,
    emit: Callable[[Event], None],
    client: ChildTaskClient,
) -> Pool:
    """The process, thread or async pool of `plan`, reporting through `emit`."""
    # Each pool is imported when chosen: the async pool loads asyncio, the process pool subprocess.
    served = [name for name, task in config.tasks.items() if task.queue in plan.queues]
    if plan.pool in ("thread", "async"):
        _preload(served, registry)
    if plan.pool == "thread":
        from stemrun.worker.pool_thread import ThreadPool

        return ThreadPool(plan.concurrency, registry.handler, emit, client.enqueue)
    if plan.pool == "async":
        from stemrun.worker.pool_async import AsyncPool

        return AsyncPool(plan.concurrency, registry.handler, emit, client.enqueue)
    from stemrun.worker.pool_process import ProcessPool

    init = {
        "handlers": {name: task.handler for name, task in config.tasks.items()},
        "preload": served,
        "root_dir": str(config.root_dir),
        "config_path": str(config.path),
    }
    return ProcessPool(plan.concurrency, init, emit, plan.max_tasks_per_child)


def _preload(served: list[str], registry: Registry) -> None:
    """Import the handlers of the tasks routed to this worker's queues before the first task, as
    process-pool children do (see child.py).

    A task then starts the moment the worker starts it: a rate-limited start is measured when
    its handler begins (docs/flow-control.md). A handler that fails to import fails its tasks
    when they run, as it would without the preload.
    """
    for name in served:
        try:
            registry.handler(name)
        except HandlerImportError:
            continue
