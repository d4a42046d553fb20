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

from stemrun.worker.execute import Outcome, execute_async
from stemrun.worker.job import Done, Emit, EnqueueFn, EventBridge, Job
from stemrun.worker.pool import Running, hard_limit_outcome
from stemrun.worker.pool_thread import Loader, run_here


class AsyncPool:
    """Runs up to `concurrency` attempts at once on a private event loop."""

    def __init__(self, concurrency: int, load: Loader, emit: Emit, enqueue: EnqueueFn) -> None:
        self._concurrency = concurrency
        self._load = load
        self._emit = emit
        self._enqueue = enqueue
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._busy = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stemrun-async")
        self._thread.daemon = True
        # sync handlers abandoned by a hard limit keep their thread: leave room for replacements
        self._executor = ThreadPoolExecutor(concurrency * 2, thread_name_prefix="stemrun-sync")
        self._cancelled: set[str] = set()  # keys whose next ctx call raises TaskCancelled

    def start(self) -> None:
        self._thread.start()

    def free_slots(self) -> int:
        with self._lock:
            return self._concurrency - self._busy

    def running(self) -> int:
        with self._lock:
            return self._busy

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

    def _finish(self, key: str, outcome: Outcome) -> None:
        self._cancelled.discard(key)
        with self._lock:
            entry = self._running.pop(key, None)
            if entry is None or entry.hard_fired:
                return  # abandoned by its hard limit: the late result is ignored
            self._busy -= 1
        self._emit(Done(key, outcome))

    def maintain(self) -> None:
        now = Running.now()
        with self._lock:
            entries = list(self._running.values())
        for entry in entries:
            if entry.soft_due(now):
                entry.soft.fire()
            if entry.hard_due(now):
                self._abandon(entry)

    def _abandon(self, entry: Running) -> None:
        with self._lock:
            if entry.job.key not in self._running or entry.hard_fired:
                return
            entry.hard_fired = True
            self._busy -= 1
        entry.soft.fire()
        self._emit(Done(entry.job.key, hard_limit_outcome(entry.job)))

    def close(self, *, graceful: bool) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if graceful:
            self._thread.join(timeout=1.0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def cancel(self, key: str) -> None:
        with self._lock:
            if key in self._running:
                self._cancelled.add(key)
