"""The async pool: coroutines on one event-loop thread inside the worker process.

`async def` handlers run as tasks on the loop, up to `concurrency` at once; sync handlers run in a
thread executor beside it. See `stemrun.worker.pool` for what this pool can enforce about time
limits (soft: cancellation; hard: the attempt is abandoned).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor

from stemrun.worker.execute import execute_async
from stemrun.worker.job import Emit, EnqueueFn, EventBridge, Job
from stemrun.worker.pool import Running
from stemrun.worker.pool_inprocess import InProcessPool, Loader
from stemrun.worker.pool_thread import run_here


class AsyncPool(InProcessPool):
    """Runs up to `concurrency` attempts at once on a private event loop."""

    def __init__(self, concurrency: int, load: Loader, emit: Emit, enqueue: EnqueueFn) -> None:
        super().__init__(concurrency, load, emit, enqueue)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stemrun-async")
        self._thread.daemon = True
        # sync handlers abandoned by a hard limit keep their thread: leave room for replacements
        self._executor = ThreadPoolExecutor(concurrency * 2, thread_name_prefix="stemrun-sync")

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        entry = Running(job)
        with self._lock:
            self._running[job.key] = entry
            self._busy += 1
        asyncio.run_coroutine_threadsafe(self._run(entry), self._loop)

    async def _run(self, entry: Running) -> None:
        job = entry.job
        try:
            handler = self._load(job.task)
        except Exception:  # reported as the attempt's error by execute below
            handler = None
        cancelled = functools.partial(self._cancelled.__contains__, job.key)
        if handler is not None and not inspect.iscoroutinefunction(handler):
            run = functools.partial(run_here, cancelled=cancelled)
            outcome = await self._loop.run_in_executor(
                self._executor, run, self._load, job, entry.soft, self._emit, self._enqueue
            )
        else:
            ctx = job.context(EventBridge(job.key, self._emit, self._enqueue, cancelled))
            outcome = await execute_async(lambda: self._load(job.task), ctx, job.args, entry.soft)
        self._finish(job.key, outcome)

    def close(self, *, graceful: bool) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if graceful:
            self._thread.join(timeout=1.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
