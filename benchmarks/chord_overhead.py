"""What a chord costs over independent tasks; prints a table.

    .venv/bin/python benchmarks/chord_overhead.py [--members 1000] [--workers 2] [-c 2] [--rounds 3]

The same `--workers` `stemrun worker` processes (embedded SQLite, process pool) run, in turn:

- `--members` independent no-op tasks (one `enqueue_many`),
- a group of `--members` no-op members (per member: the chord counter write and the group
  record update),
- a chord of `--members` no-op members and a callback receiving every result.

Each is timed from just before the enqueue call to the last recorded finish: the last task's
`finished_at` for the independent tasks, the canvas record's `finished_at` for group and chord
(written after the last member, resp. the callback, finished). Every row is the median of
`--rounds` rounds. "callback latency" is the last member's finish -> the callback's finish.
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
from collections.abc import Callable
from pathlib import Path

from stemrun.backends.record import StatusRecord
from stemrun.client import Stem
from stemrun.config import load_config
from stemrun.state import TERMINAL

POLL_S = 0.05

STEM_YAML = """
version: 1
broker: sqlite:///.stem/bench.db
queues:
  default: {{}}
tasks:
  noop: {{handler: "benchtasks:noop", max_retries: 0}}
  collect: {{handler: "benchtasks:collect", max_retries: 0}}
workers:
  default: {{queues: [default], concurrency: {concurrency}, pool: process}}
"""

TASKS = """
def noop(n=0):
    return n


def collect(results):
    return len(results)
"""


def start_workers(root: Path, count: int) -> list[subprocess.Popen[bytes]]:
    stemrun = str(Path(sys.executable).parent / "stemrun")
    return [
        subprocess.Popen(
            [stemrun, "worker", "--log-level", "warning", "-n", f"bench{i}"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


def poll(done: Callable[[], bool]) -> None:
    """Wait for `done`, checking every POLL_S so the watcher takes little CPU from the workers."""
    deadline = time.monotonic() + 600
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not finish in time")
        time.sleep(POLL_S)


def independent(stem: Stem, members: int) -> tuple[float, float]:
    started = time.time()
    ids = stem.enqueue_many([("noop", {"n": n}) for n in range(members)])

    def idle() -> bool:
        stats = stem.broker.stats(["default"])["default"]
        return stats.pending + stats.in_flight + stats.delayed == 0

    poll(idle)
    return max(stem.status(i).finished_at or 0.0 for i in ids) - started, 0.0


def finished(stem: Stem, canvas_id: str) -> StatusRecord:
    poll(lambda: stem.status(canvas_id).state in TERMINAL)
    return stem.status(canvas_id)


def group(stem: Stem, members: int) -> tuple[float, float]:
    started = time.time()
    group_id = stem.canvas.group([("noop", {"n": n}) for n in range(members)])
    final = finished(stem, group_id)
    return (final.finished_at or 0.0) - started, 0.0


def chord(stem: Stem, members: int) -> tuple[float, float]:
    started = time.time()
    chord_id = stem.canvas.chord([("noop", {"n": n}) for n in range(members)], "collect")
    final = finished(stem, chord_id)
    assert final.result == members, final
    last_member = max(stem.status(f"{chord_id}.{n}").finished_at or 0.0 for n in range(members))
    callback = stem.status(f"{chord_id}.callback").finished_at or 0.0
    return (final.finished_at or 0.0) - started, callback - last_member


Run = Callable[[Stem, int], tuple[float, float]]


def measure(stem: Stem, runs: dict[str, Run], members: int, rounds: int) -> dict[str, list[float]]:
    """Median (total, callback latency) per kind; kinds interleave so drift hits all alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(run(stem, members))
    return {
        name: [statistics.median(s[0] for s in got), statistics.median(s[1] for s in got)]
        for name, got in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    runs: dict[str, Run] = {"independent tasks": independent, "group": group, "chord": chord}
    with tempfile.TemporaryDirectory(prefix="stemrun-bench-") as tmp:
        root = Path(tmp)
        (root / "benchtasks.py").write_text(TASKS)
        (root / "stem.yaml").write_text(STEM_YAML.format(concurrency=opts.concurrency))
        procs = start_workers(root, opts.workers)
        try:
            with Stem(load_config(root / "stem.yaml")) as stem:
                time.sleep(2.0)  # let the workers start their pools
                independent(stem, 50)  # warm-up: imports, first connections
                results = measure(stem, runs, opts.members, opts.rounds)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
    report(results, opts)


def report(results: dict[str, list[float]], opts: argparse.Namespace) -> None:
    print(
        f"stemrun | Python {platform.python_version()} | {platform.machine()} "
        f"{os.cpu_count()} cpus | sqlite | {opts.workers} workers x {opts.concurrency} process "
        f"| median of {opts.rounds}"
    )
    base = results["independent tasks"][0]
    print(
        f"{'run (' + str(opts.members) + ' members)':24} {'total':>10} {'per member':>12} "
        f"{'vs independent':>15} {'callback latency':>17}"
    )
    for name, (total, callback) in results.items():
        latency = f"{callback * 1000:.1f} ms" if name == "chord" else "-"
        print(
            f"{name:24} {total:>8.2f} s {total / opts.members * 1e3:>9.2f} ms "
            f"{(total / base - 1) * 100:>+14.1f}% {latency:>17}"
        )


if __name__ == "__main__":
    main()
