"""The thread pool: handlers run in threads of the worker process.

See `stemrun.worker.pool` for what the thread pool can and cannot enforce about time limits.
"""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
from collections.abc import Callable

from stemrun.errors import SoftTimeLimitExceeded
from stemrun.worker.execute import Outcome, SoftLimit, execute, failure
from stemrun.worker.job import Emit, EnqueueFn, EventBridge, Job
from stemrun.worker.pool import Running
from stemrun.worker.pool_inprocess import InProcessPool, Loader


def raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> None:
    """Raise `exc_type` in thread `ident` at its next bytecode; None clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else None
    )


def run_here(
    load: Loader,
    job: Job,
    soft: SoftLimit,
    emit: Emit,
    enqueue: EnqueueFn,
    cancelled: Callable[[], bool] | None = None,
) -> Outcome:
    """Run one attempt in the calling thread, interruptible by `soft` from another thread."""
    ident = threading.get_ident()
    ctx = job.context(EventBridge(job.key, emit, enqueue, cancelled))
    outcome: Outcome | None = None
    try:
        outcome = execute(
            lambda: load(job.task),
            ctx,
            job.args,
            soft,
            lambda: raise_in_thread(ident, SoftTimeLimitExceeded),
        )
        if soft.fired:
            # an interrupt sent just before the handler returned must not hit the pool's code
            raise_in_thread(ident, None)
    except SoftTimeLimitExceeded:
        if outcome is None:
            outcome = failure("SoftTimeLimitExceeded", "soft time limit exceeded")
    return outcome


class ThreadPool(InProcessPool):
    """`concurrency` threads taking jobs from one queue."""

    def __init__(self, concurrency: int, load: Loader, emit: Emit, enqueue: EnqueueFn) -> None:
        super().__init__(concurrency, load, emit, enqueue)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._retire: set[int] = set()  # idents of threads abandoned by a hard limit
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for _ in range(self._concurrency):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._serve, name="stemrun-pool", daemon=True)
        thread.start()
        self._threads.append(thread)

    def submit(self, job: Job) -> None:
        with self._lock:
            self._running[job.key] = Running(job)
            self._busy += 1
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                entry = self._running.get(job.key)
                if entry is not None:
                    entry.thread_ident = threading.get_ident()
            if entry is not None:
                stop = functools.partial(self._cancelled.__contains__, job.key)
                outcome = run_here(self._load, job, entry.soft, self._emit, self._enqueue, stop)
                self._finish(job.key, outcome)
            with self._lock:
                if threading.get_ident() in self._retire:
                    return

    def _abandoned(self, entry: Running) -> None:
        if entry.thread_ident is not None:
            self._retire.add(entry.thread_ident)

    def _replace_abandoned(self) -> None:
        self._spawn()

    def close(self, *, graceful: bool) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if graceful:
            for thread in self._threads:
                thread.join(timeout=1.0)
