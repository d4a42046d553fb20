"""Memory of one worker process with its children, after it drained a backlog."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .harness import System, start_workers, stop_workers, wait_finishes


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """Sums over the worker and its descendants, in KiB; RSS counts shared pages once per process,
    PSS splits them between the processes that share them."""

    processes: int
    rss_kib: int
    pss_kib: int


def measure_memory(system: System, concurrency: int, tasks: int, timeout_s: float) -> Memory:
    """Start one worker at `concurrency`, let it drain `tasks`, then read its tree's memory."""
    bulk = system.enqueue_many(tasks)
    _, handles = bulk if bulk is not None else system.enqueue(tasks)
    procs = start_workers([system.memory_command(concurrency)], system.root, f"mem{concurrency}")
    try:
        wait_finishes(system, handles, timeout_s)
        time.sleep(1.0)  # let pools settle (idle children, freed buffers) before reading
        return tree_memory(procs[0].pid)
    finally:
        stop_workers(procs)
        system.reset()


def tree_memory(pid: int) -> Memory:
    pids = [pid, *descendants(pid)]
    rss = sum(status_kib(p, "VmRSS") for p in pids)
    pss = sum(rollup_kib(p, "Pss") for p in pids)
    return Memory(processes=len(pids), rss_kib=rss, pss_kib=pss)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process exited while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def status_kib(pid: int, field: str) -> int:
    return field_kib(Path(f"/proc/{pid}/status"), field)


def rollup_kib(pid: int, field: str) -> int:
    return field_kib(Path(f"/proc/{pid}/smaps_rollup"), field)


def field_kib(path: Path, field: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0
