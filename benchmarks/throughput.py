"""Throughput and latency of stemrun on one store; prints a table.

    .venv/bin/python benchmarks/throughput.py [--broker URL] [--tasks N] [--workers 2] [-c 2]

Measures, on no-op tasks with status records written:
- plain enqueue rate (one `Stem.enqueue` call per task),
- `enqueue_many` rate (batches of 1,000),
- drain rate of `--workers` `stemrun worker` processes (tasks published due at one instant, timed
  from that instant to the last recorded finish),
- enqueue-to-finish latency p50/p95 at low load (one task at a time, from the status record's
  created_at to finished_at).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stemrun.client import EnqueueOptions, Stem
from stemrun.config import load_config

STEM_YAML = """
version: 1
broker: {broker}
namespace: bench{stamp}
queues:
  default: {{}}
tasks:
  noop: {{handler: "benchtasks:noop", max_retries: 0}}
workers:
  default: {{queues: [default], concurrency: {concurrency}, pool: {pool}}}
"""


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def bench_enqueue(stem: Stem, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        stem.enqueue("noop")
    return time.perf_counter() - started


def bench_enqueue_many(stem: Stem, count: int, eta: float | None = None) -> tuple[float, list[str]]:
    ids: list[str] = []
    options = EnqueueOptions(eta=eta)
    started = time.perf_counter()
    for _ in range(0, count, 1000):
        ids += stem.enqueue_many([("noop", {}, options)] * min(1000, count - len(ids)))
    return time.perf_counter() - started, ids


def start_workers(root: Path, count: int) -> list[subprocess.Popen[bytes]]:
    stemrun = str(Path(sys.executable).parent / "stemrun")
    return [
        subprocess.Popen(
            [stemrun, "worker", "--log-level", "warning"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def wait_idle(stem: Stem, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(stem.status(i).finished_at for i in ids[-50:]):
            stats = stem.broker.stats(["default"])["default"]
            if stats.pending + stats.in_flight + stats.delayed == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("workers did not drain the queue in time")


def bench_drain(stem: Stem, root: Path, count: int, workers: int) -> float:
    procs = start_workers(root, workers)
    try:
        time.sleep(2.0)  # let the workers start their pools before the tasks become due
        due = time.time() + 3.0
        _, ids = bench_enqueue_many(stem, count, eta=due)
        wait_idle(stem, ids, timeout=300)
        last = max(stem.status(i).finished_at or 0.0 for i in ids)
        return last - due
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


def bench_latency(stem: Stem, root: Path, samples: int) -> tuple[float, float]:
    procs = start_workers(root, 1)
    try:
        time.sleep(2.0)
        latencies = []
        for _ in range(samples):
            record = stem.wait(stem.enqueue("noop"), timeout=30)
            latencies.append((record.finished_at or 0.0) - record.created_at)
            time.sleep(0.02)
        cuts = statistics.quantiles(latencies, n=20)
        return statistics.median(latencies), cuts[18]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="sqlite:///.stem/bench.db")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="process")
    parser.add_argument("--samples", type=int, default=200)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemrun-bench-") as tmp:
        root = Path(tmp)
        (root / "benchtasks.py").write_text("def noop() -> None:\n    return None\n")
        (root / "stem.yaml").write_text(
            STEM_YAML.format(
                broker=opts.broker, stamp=os.getpid(), concurrency=opts.concurrency, pool=opts.pool
            )
        )
        with Stem(load_config(root / "stem.yaml")) as stem:
            plain = bench_enqueue(stem, min(opts.tasks, 5_000))
            many, _ = bench_enqueue_many(stem, opts.tasks)
            drain_with_burst_worker(stem, root)
            drain = bench_drain(stem, root, opts.tasks, opts.workers)
            p50, p95 = bench_latency(stem, root, opts.samples)

    print(
        f"stemrun {stem_version()} | Python {platform.python_version()} | "
        f"{platform.machine()} {os.cpu_count()} cpus | broker {opts.broker}"
    )
    print(f"{'metric':44} {'value':>14}")
    print(f"{'enqueue (plain)':44} {rate(min(opts.tasks, 5_000), plain):>14}")
    print(f"{'enqueue_many (batches of 1,000)':44} {rate(opts.tasks, many):>14}")
    label = f"drain ({opts.workers} workers x {opts.concurrency} {opts.pool})"
    print(f"{label:44} {rate(opts.tasks, drain):>14}")
    print(f"{'enqueue-to-finish latency p50':44} {p50 * 1000:>11.1f} ms")
    print(f"{'enqueue-to-finish latency p95':44} {p95 * 1000:>11.1f} ms")


def drain_with_burst_worker(stem: Stem, root: Path) -> None:
    """Drain the enqueue-rate tasks with a burst worker so the drain run starts empty."""
    stemrun = str(Path(sys.executable).parent / "stemrun")
    subprocess.run([stemrun, "worker", "--burst", "--log-level", "warning"], cwd=root, check=True)


def stem_version() -> str:
    import stemrun

    return stemrun.__version__


if __name__ == "__main__":
    main()
