"""What every measurement shares: the System shape, worker processes, rates, key cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

T = TypeVar("T")
BIN = Path(sys.executable).parent
BATCH = 1000  # tasks per bulk call: the same batch size as the pipelined XADD ceiling
IDLE_GAP_S = 0.01  # pause between latency samples, so each task meets idle workers


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """One repetition's figures for one system (rates per second, latency in ms)."""

    enqueue: float
    batch: float | None
    drain: float
    p50_ms: float | None
    others_cpu: float  # share of the machine's CPU that other people's processes used meanwhile


class System(ABC):
    """One task system, driven the same way as every other: enqueue, drain with workers, latency.

    `handles` are whatever the system's enqueue returns; `finishes` maps them to the time the no-op
    task returned (its `time.time()`), or None while it has not finished.
    """

    label: str
    note: str = ""
    root: Path

    def prepare(self, root: Path) -> None:
        """Write the system's app module into `root` and connect the producer."""
        self.root = root

    @abstractmethod
    def enqueue(self, count: int) -> tuple[float, list[Any]]:
        """Enqueue `count` tasks one call each; returns (tasks/s, handles)."""

    def enqueue_many(self, count: int) -> tuple[float, list[Any]] | None:
        """Enqueue through the bulk API in batches of BATCH; None where the system has none."""
        return None

    @abstractmethod
    def finishes(self, handles: Sequence[Any]) -> list[float | None]:
        """Each task's returned finish time, None if not finished yet."""

    @abstractmethod
    def p50_ms(self, samples: int) -> float:
        """Median enqueue-to-finish time of `samples` tasks sent one at a time."""

    @abstractmethod
    def worker_commands(self) -> list[list[str]]:
        """Commands starting the system's 2 worker processes, configured for throughput."""

    def memory_command(self, concurrency: int) -> list[str]:
        """Command starting one worker process at `concurrency`."""
        raise NotImplementedError(f"{self.label}: no memory measurement")

    @abstractmethod
    def reset(self) -> None:
        """Delete what one repetition created, ready for the next."""

    @abstractmethod
    def close(self) -> None:
        """Delete everything the run created and disconnect."""


def timed(fn: Callable[[], T], count: int) -> tuple[float, T]:
    started = time.perf_counter()
    value = fn()
    return count / (time.perf_counter() - started), value


def batches(count: int) -> Iterator[int]:
    """Sizes of the bulk calls that enqueue `count` tasks."""
    for start in range(0, count, BATCH):
        yield min(BATCH, count - start)


def chunks(items: Sequence[T], size: int = 1000) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def span_rate(finishes: Sequence[float]) -> float:
    """Tasks per second between the first and the last finish, so worker start-up is not counted."""
    return (len(finishes) - 1) / (max(finishes) - min(finishes))


def wait_finishes(system: System, handles: Sequence[Any], timeout_s: float) -> list[float]:
    """Every task's finish time, reading results only once the last-enqueued task is done.

    Queues are FIFO, so when the last task has finished nearly all have; polling that one task
    every 50 ms keeps the benchmark process from competing with the workers for the CPU.
    """
    deadline = time.monotonic() + timeout_s
    while system.finishes(handles[-1:])[0] is None:
        check_deadline(deadline, system, "the last task")
        time.sleep(0.05)
    found: list[float] = []
    for chunk in chunks(handles):
        while None in (values := system.finishes(chunk)):
            check_deadline(deadline, system, "every task")
            time.sleep(0.05)
        found += [value for value in values if value is not None]
    return found


def check_deadline(deadline: float, system: System, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{system.label}: {what} did not finish in time (logs in {system.root})")


def p50_sync(
    enqueue_one: Callable[[], Any], finish_of: Callable[[Any], float | None], samples: int
) -> float:
    """Median of enqueue → task's own finish time, polling every millisecond for it."""
    values = []
    for _ in range(samples):
        before = time.time()
        handle = enqueue_one()
        while (finish := finish_of(handle)) is None:
            time.sleep(0.001)
        values.append(finish - before)
        time.sleep(IDLE_GAP_S)
    return statistics.median(values) * 1000


async def p50_async(
    enqueue_one: Callable[[], Awaitable[Any]],
    finish_of: Callable[[Any], Awaitable[float | None]],
    samples: int,
) -> float:
    """p50_sync for asyncio clients, inside their event loop."""
    values = []
    for _ in range(samples):
        before = time.time()
        handle = await enqueue_one()
        while (finish := await finish_of(handle)) is None:
            await asyncio.sleep(0.001)
        values.append(finish - before)
        await asyncio.sleep(IDLE_GAP_S)
    return statistics.median(values) * 1000


def start_workers(
    commands: list[list[str]], root: Path, name: str
) -> list[subprocess.Popen[bytes]]:
    """Start each command in its own session (so its whole tree can be stopped), logging to root."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = []
    for index, command in enumerate(commands):
        log = (root / f"{name}-worker{index}.log").open("ab")
        procs.append(
            subprocess.Popen(
                command, cwd=root, env=env, stdout=log, stderr=log, start_new_session=True
            )
        )
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker (each system's own shutdown), then kill what is left of its session."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # children a worker left behind
        except ProcessLookupError:
            pass


def drop_keys(url: str, *patterns: str) -> None:
    """Delete the keys matching patterns of this run's own names (never FLUSHDB)."""
    client = redis.Redis.from_url(url)
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for chunk in chunks(keys, 500):
            client.delete(*chunk)
    client.close()
