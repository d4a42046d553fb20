"""Hot reload under load: latency of a reload and throughput while it happens; prints a table.

    .venv/bin/python benchmarks/reload.py [--tasks 20000] [--replicas 2] [-c 2] [--pool process]

`stemrun up` (log level warning) drains a backlog of no-op tasks on the embedded SQLite store
while stem.yaml is saved:

- `--restarts` times with a task option change (`record.max_retries`), which restarts every
  replica of the group at the same capacity. Latency: file saved -> the first task finished by a
  replacement child (its name carries the reload's `.gN`).
- once adding a queue and a worker group; a probe task is enqueued on the new queue right after
  the save. Latency: file saved -> the probe finished.

Throughput comes from the status records' `finished_at`: the steady rate is the median of
0.5 s buckets before the first edit; "during a reload" is the rate from each save until 2 s
later (covering start of the replacements and drain of the old children).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stemrun.client import Stem
from stemrun.config import load_config

STEM_YAML = """\
version: 1
broker: sqlite:///.stem/bench.db
queues:
  default: {{}}{extra_queue}
tasks:
  noop: {{handler: "benchtasks:noop", max_retries: {retries}}}{extra_task}
workers:
  main: {{queues: [default], concurrency: {concurrency}, pool: {pool}, replicas: {replicas}}}
{extra_group}"""

EXTRA = {
    "extra_queue": "\n  extra: {}",
    "extra_task": '\n  probe: {handler: "benchtasks:noop", queue: extra}',
    "extra_group": "  extra: {queues: [extra], concurrency: 1, pool: thread}\n",
}
WINDOW_S = 2.0  # what counts as "during a reload" after a save
BUCKET_S = 0.5


def write(root: Path, opts: argparse.Namespace, retries: int, extra: bool) -> float:
    """Save stem.yaml atomically (as editors do); the time it was saved."""
    parts = EXTRA if extra else dict.fromkeys(EXTRA, "")
    text = STEM_YAML.format(
        retries=retries,
        concurrency=opts.concurrency,
        pool=opts.pool,
        replicas=opts.replicas,
        **parts,
    )
    temp = root / "stem.yaml.tmp"
    temp.write_text(text)
    temp.replace(root / "stem.yaml")
    return time.time()


def backlog(stem: Stem, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        ids += stem.enqueue_many([("noop", {})] * min(1000, count - len(ids)))
    return ids


def first_finish_by(records: list[tuple[float, str]], suffix: str, after: float) -> float | None:
    times = [done for done, worker in records if worker.endswith(suffix) and done >= after]
    return min(times) if times else None


def rate_between(records: list[tuple[float, str]], start: float, end: float) -> float:
    return sum(1 for done, _ in records if start <= done < end) / (end - start)


def steady_rate(records: list[tuple[float, str]], start: float, end: float) -> float:
    buckets = []
    edge = start
    while edge + BUCKET_S <= end:
        buckets.append(rate_between(records, edge, edge + BUCKET_S))
        edge += BUCKET_S
    return statistics.median(buckets) if buckets else 0.0


def run(root: Path, opts: argparse.Namespace) -> dict[str, object]:
    write(root, opts, retries=0, extra=False)
    stem = Stem(load_config(root / "stem.yaml"))
    ids = backlog(stem, opts.tasks)
    stemrun = str(Path(sys.executable).parent / "stemrun")
    up = subprocess.Popen(
        [stemrun, "up", "--log-level", os.environ.get("BENCH_LOG", "warning")],
        cwd=root,
        stderr=open(root / "up.log", "wb"),
    )
    try:
        while not stem.status(ids[0]).finished_at:
            time.sleep(0.05)
        first = time.time()
        time.sleep(opts.settle)
        saves = []
        for n in range(opts.restarts):
            saves.append(write(root, opts, retries=n + 1, extra=False))
            time.sleep(opts.gap)
        group_saved = write(root, opts, retries=opts.restarts, extra=True)
        with Stem(load_config(root / "stem.yaml")) as probe_client:
            probe = probe_client.wait(probe_client.enqueue("probe"), timeout=60)
        while stem.status(ids[-1]).finished_at is None:
            time.sleep(0.2)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
    records = [(r.finished_at or 0.0, r.worker or "") for r in map(stem.status, ids)]
    stem.close()
    restart_latency = [
        (first_finish_by(records, f".g{n + 2}", saved) or float("nan")) - saved
        for n, saved in enumerate(saves)
    ]
    return {
        "steady": steady_rate(records, first + 1.0, saves[0]),
        "during": statistics.median(rate_between(records, s, s + WINDOW_S) for s in saves),
        "restart_latency": restart_latency,
        "group_latency": (probe.finished_at or float("nan")) - group_saved,
        "tasks": len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="process")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--settle", type=float, default=4.0, help="steady seconds before edits")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between edits")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stemrun-reload-") as tmp:
        root = Path(tmp)
        (root / "benchtasks.py").write_text("def noop() -> None:\n    return None\n")
        result = run(root, opts)
    latencies = sorted(result["restart_latency"])  # type: ignore[call-overload]
    print(
        f"Python {platform.python_version()} | {platform.machine()} {os.cpu_count()} cpus | "
        f"group main: {opts.replicas} replicas x {opts.concurrency} {opts.pool} slots | "
        f"{result['tasks']} no-op tasks"
    )
    print(f"{'metric':52} {'value':>12}")
    print(f"{'tasks/s, steady state':52} {result['steady']:>10,.0f}/s")
    print(f"{'tasks/s, first 2 s after a save (median of edits)':52} {result['during']:>10,.0f}/s")
    for label, value in (
        ("reload latency, changed group (min)", latencies[0]),
        ("reload latency, changed group (median)", statistics.median(latencies)),
        ("reload latency, new group (save -> probe done)", result["group_latency"]),
    ):
        print(f"{label:52} {value * 1000:>9,.0f} ms")


if __name__ == "__main__":
    main()
