"""How much of the machine other people's processes used while a system was being measured.

The load average counts the benchmark's own workers, so it cannot tell a quiet machine from a busy
one; this subtracts the CPU time of the benchmark, its workers and Redis from the machine's total.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

from .memory import descendants

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def machine_busy_ticks() -> int:
    """Non-idle CPU ticks of all cores since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def process_ticks(pid: int) -> int:
    """utime + stime of a process and of the children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(value) for value in fields[11:15])


def redis_pid(client: redis.Redis) -> int | None:
    """The local Redis server's pid (its CPU is the benchmark's), None if Redis is elsewhere."""
    pid = int(client.info("server")["process_id"])
    try:
        comm = Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return None
    return pid if "redis" in comm else None


class OthersMeter:
    """Share of the machine's CPU used by processes outside `own` pids and their trees."""

    def __init__(self, own: list[int]) -> None:
        self.own = own
        self.started = time.monotonic()
        self.machine = machine_busy_ticks()
        self.ours = self.own_ticks()

    def own_ticks(self) -> int:
        pids = {pid for root in self.own for pid in (root, *descendants(root))}
        return sum(process_ticks(pid) for pid in pids)

    def share(self) -> float:
        """Others' CPU share since start; call it while the workers still run (and count)."""
        others = machine_busy_ticks() - self.machine - (self.own_ticks() - self.ours)
        capacity = (time.monotonic() - self.started) * TICKS_PER_S * (os.cpu_count() or 1)
        return max(0.0, others / capacity)
