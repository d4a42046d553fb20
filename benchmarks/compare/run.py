"""Run every selected system the same way, repetitions interleaved, and print the report."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis

from . import report
from .celery_peer import CeleryPeer
from .cpu import OthersMeter, redis_pid
from .dramatiq_peer import DramatiqPeer
from .harness import Figures, System, span_rate, start_workers, stop_workers, wait_finishes
from .huey_peer import HueyPeer
from .memory import Memory, measure_memory
from .rq_peer import RqPeer
from .saq_peer import SaqPeer
from .stemrun_system import StemrunSystem
from .streams_ceiling import StreamsCeiling
from .taskiq_peer import TaskiqPeer

TAG = uuid.uuid4().hex[:8]
REDIS_TABLE = ["streams", "huey", "dramatiq", "taskiq", "saq", "celery", "rq"]
REDIS_TABLE += ["stemrun-process", "stemrun-thread"]
SQLITE_TABLE = ["huey-sqlite", "stemrun-sqlite"]
MEMORY_SYSTEMS = ["stemrun-process", "stemrun-thread", "huey", "dramatiq"]
MEMORY_CONCURRENCY = (2, 8)
OWN_PIDS: list[int] = []  # besides this process: the local Redis server, whose work is ours


@dataclass
class Row:
    """A system and its figures, one per repetition; `error` if a repetition failed."""

    name: str
    system: System
    reps: list[Figures] = field(default_factory=list)
    memory: dict[int, Memory] = field(default_factory=dict)
    error: str | None = None

    def median(self, metric: str) -> float | None:
        values = [getattr(rep, metric) for rep in self.reps]
        present = [value for value in values if value is not None]
        return statistics.median(present) if present else None


def factories(opts: argparse.Namespace) -> dict[str, Callable[[], System]]:
    """Peers on --other-db under names carrying this run's tag; stemrun on db 0 in a namespace."""
    other, stem = f"{opts.redis}/{opts.other_db}", f"{opts.redis}/0"
    return {
        "streams": lambda: StreamsCeiling(other, TAG),
        "huey": lambda: HueyPeer(other, TAG),
        "dramatiq": lambda: DramatiqPeer(other, TAG),
        "taskiq": lambda: TaskiqPeer(other, TAG),
        "saq": lambda: SaqPeer(other, TAG),
        "celery": lambda: CeleryPeer(other, TAG),
        "rq": lambda: RqPeer(other, TAG),
        "stemrun-process": lambda: StemrunSystem(stem, TAG, pool="process", concurrency=2),
        "stemrun-thread": lambda: StemrunSystem(stem, TAG, pool="thread", concurrency=8),
        "huey-sqlite": lambda: HueyPeer("sqlite:", TAG),
        "stemrun-sqlite": lambda: StemrunSystem("sqlite:", TAG, pool="process", concurrency=2),
    }


def measure(system: System, tasks: int, samples: int, timeout_s: float) -> Figures:
    """Plain enqueue, bulk enqueue, then 2 workers drain what those left, then latency."""
    meter = OthersMeter([os.getpid(), *OWN_PIDS])  # the workers are this process's children
    enqueue_rate, handles = system.enqueue(tasks)
    bulk = system.enqueue_many(tasks)
    procs = start_workers(system.worker_commands(), system.root, "drain")
    try:
        finishes = wait_finishes(system, handles + (bulk[1] if bulk else []), timeout_s)
        p50 = system.p50_ms(samples) if samples else None
        others = meter.share()
    finally:
        stop_workers(procs)
        system.reset()
    batch = bulk[0] if bulk else None
    drain = span_rate(finishes)
    return Figures(enqueue=enqueue_rate, batch=batch, drain=drain, p50_ms=p50, others_cpu=others)


def run_reps(rows: list[Row], opts: argparse.Namespace, samples: int) -> None:
    for rep in range(opts.reps):
        # Each repetition starts further down the list, so no system always runs in the same spot
        # and one system's repetitions are minutes apart (a burst of other load hits one of them).
        shift = rep * len(rows) // opts.reps
        for row in rows[shift:] + rows[:shift]:
            if row.error:
                continue
            log(f"rep {rep + 1}/{opts.reps}: {row.system.label} ...")
            gc.collect()  # start each measurement without the previous system's garbage
            try:
                row.reps.append(measure(row.system, opts.tasks, samples, opts.timeout))
            except Exception:
                row.error = traceback.format_exc(limit=3).strip().splitlines()[-1]
                log(traceback.format_exc())
                continue
            log(f"  {row.reps[-1]}")


def run_memory(rows: list[Row], opts: argparse.Namespace) -> None:
    for row in rows:
        if row.name not in MEMORY_SYSTEMS or row.error:
            continue
        for concurrency in MEMORY_CONCURRENCY:
            log(f"memory: {row.system.label}, one worker at concurrency {concurrency} ...")
            try:
                memory = measure_memory(row.system, concurrency, opts.memory_tasks, opts.timeout)
            except Exception:
                log(traceback.format_exc())
                continue
            row.memory[concurrency] = memory
            log(f"  {memory}")


def open_rows(names: list[str], opts: argparse.Namespace, stack: ExitStack) -> Iterator[Row]:
    make = factories(opts)
    for name in names:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"cmp-{name}-")))
        system = make[name]()
        stack.callback(close_quietly, system)
        try:
            system.prepare(root)
        except Exception:
            log(f"preparing {name}:\n{traceback.format_exc()}")
            yield Row(name, system, error=traceback.format_exc(limit=1).strip().splitlines()[-1])
            continue
        yield Row(name, system)


def close_quietly(system: System) -> None:
    try:
        system.close()
    except Exception:
        log(f"closing {system.label}:\n{traceback.format_exc()}")


def keys_of(url: str) -> set[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    # A SIGTERM (or `timeout`) still stops the workers and deletes the run's keys on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts = parse_args(argv)
    selected = opts.only.split(",") if opts.only else REDIS_TABLE + SQLITE_TABLE
    unknown = set(selected) - set(REDIS_TABLE + SQLITE_TABLE)
    if unknown:
        sys.exit(f"unknown --only names {sorted(unknown)}; known: {REDIS_TABLE + SQLITE_TABLE}")
    other = f"{opts.redis}/{opts.other_db}"
    before, load_before = keys_of(other), os.getloadavg()
    OWN_PIDS[:] = [pid] if (pid := redis_pid(redis.Redis.from_url(opts.redis))) else []
    started = time.time()
    with ExitStack() as stack:
        rows = list(open_rows(selected, opts, stack))
        redis_rows = [row for row in rows if row.name in REDIS_TABLE]
        run_reps(redis_rows, opts, opts.samples)
        run_reps([row for row in rows if row.name in SQLITE_TABLE], opts, samples=0)
        if not opts.skip_memory:
            run_memory(redis_rows, opts)
    left = sorted(keys_of(other) - before)
    if left:
        log(f"keys created in {other} and still there (not this run's names?): {left[:20]}")
    context = report.Context(
        opts=opts, started=started, load_before=load_before, load_after=os.getloadavg()
    )
    print(report.render(rows, context))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="stemrun beside its peers on one Redis")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="server, no db")
    parser.add_argument("--other-db", type=int, default=9, help="db for every system but stemrun")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per enqueue measurement")
    parser.add_argument("--reps", type=int, default=2, help="repetitions; medians are reported")
    parser.add_argument("--samples", type=int, default=100, help="latency samples per repetition")
    parser.add_argument("--memory-tasks", type=int, default=2_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for one drain")
    parser.add_argument("--only", default="", help=f"subset of {REDIS_TABLE + SQLITE_TABLE}")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
