"""What `stemrun observe` and the metrics endpoint show: views over the stores, never the caller.

Everything here reads the shared stores (broker queue counts, worker heartbeats and task counters
in the result backend, schedule entries), so any process on any machine sees every worker's
numbers. Task counters are named by `counter_name`; workers add to them once per settled batch
(stemrun/worker/metrics.py).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from stemrun.brokers.base import QueueMonitor
from stemrun.schedules.store import ScheduleEntry, ScheduleStore
from stemrun.store_base import require
from stemrun.telemetry import (
    BUCKET,
    BUCKETS,
    DURATION_US,
    OUTCOMES,
    Counter,
    Heartbeat,
    format_bound,
    parse_counters,
)

if TYPE_CHECKING:
    from stemrun.client import Stem

#: Cumulative `(le, hits)` buckets through +Inf, and the summed seconds, of one histogram series.
Histogram = tuple[list[tuple[str, int]], float]


# -- views --------------------------------------------------------------------------------------


def totals(counters: Iterable[Counter]) -> dict[str, Any]:
    """`{"tasks": {outcome: n}, "by_task": {task: {outcome: n}}}`, as `observe metrics --json`."""
    overall = dict.fromkeys(OUTCOMES, 0)
    by_task: dict[str, dict[str, int]] = {}
    for item in counters:
        if item.kind not in overall:
            continue
        overall[item.kind] += item.value
        row = by_task.setdefault(item.task, dict.fromkeys(OUTCOMES, 0))
        row[item.kind] += item.value
    return {"tasks": overall, "by_task": dict(sorted(by_task.items()))}


def outcome_series(counters: Iterable[Counter]) -> dict[str, dict[tuple[str, str], int]]:
    """`outcome -> (task, queue) -> total`, every outcome present, series sorted."""
    series: dict[str, dict[tuple[str, str], int]] = {kind: defaultdict(int) for kind in OUTCOMES}
    for item in counters:
        if item.kind in series:
            series[item.kind][(item.task, item.queue)] += item.value
    return {kind: dict(sorted(rows.items())) for kind, rows in series.items()}


def duration_series(counters: Iterable[Counter]) -> dict[tuple[str, str], Histogram]:
    """`(task, queue) -> ([(le, cumulative hits)...], summed seconds)` of the run time histogram.

    Each bucket is stored as its own counter; the bounds run through +Inf, whose count is the total.
    """
    hits: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for item in counters:
        if item.kind == BUCKET and item.le is not None:
            hits[(item.task, item.queue)][item.le] += item.value
        elif item.kind == DURATION_US:
            sums[(item.task, item.queue)] += item.value
    series = {}
    for labels in sorted(hits.keys() | sums.keys()):
        seen, buckets = 0, []
        for bound in [*map(format_bound, BUCKETS), "+Inf"]:
            seen += hits[labels].get(bound, 0)
            buckets.append((bound, seen))
        series[labels] = (buckets, sums[labels] / 1e6)
    return series


def metric_totals(stem: Stem) -> dict[str, Any]:
    """Task outcome totals across every worker since the store was created.

    Raises BackendError.
    """
    return totals(parse_counters(stem.telemetry.counters()))


def queue_views(stem: Stem) -> list[dict[str, Any]]:
    """Per declared queue: name, pending, delayed, in_flight, dead and paused.

    Raises BrokerError / BackendError.
    """
    names = list(stem.config.queues)
    stats = require(stem.broker, QueueMonitor).stats(names)
    paused = stem.flow.paused_queues()
    rows = []
    for name in names:
        counts = stats.get(name)
        rows.append(
            {
                "name": name,
                "pending": counts.pending if counts else 0,
                "delayed": counts.delayed if counts else 0,
                "in_flight": counts.in_flight if counts else 0,
                "dead": counts.dead if counts else 0,
                "paused": name in paused,
            }
        )
    return rows


def worker_view(beat: Heartbeat, now: float) -> dict[str, Any]:
    """One heartbeat as `observe workers` shows it, with `stale` and each task's runtime."""
    active = [
        {**dataclasses.asdict(task), "runtime_s": round(max(0.0, now - task.started_at), 3)}
        for task in beat.active
    ]
    return {**beat.to_dict(), "active": active, "stale": beat.stale(now)}


def worker_views(stem: Stem, now: float) -> list[dict[str, Any]]:
    """Every worker with a kept heartbeat (stale ones too), ordered by id. Raises BackendError."""
    return [worker_view(beat, now) for beat in stem.telemetry.workers()]


def schedule_view(entry: ScheduleEntry, now: float) -> dict[str, Any]:
    """One schedule entry: next/last fire, drift (how overdue its next fire is), last error."""
    due = entry.next_run_at
    drift = max(0.0, now - due) if entry.enabled and due is not None else 0.0
    return {
        "name": entry.name,
        "task": entry.task,
        "spec": entry.spec,
        "timezone": entry.timezone,
        "enabled": entry.enabled,
        "next_run_at": due,
        "last_run_at": entry.last_run_at,
        "total_run_count": entry.total_run_count,
        "drift_s": round(drift, 3),
        "last_error": entry.last_error,
    }


def schedule_views(store: ScheduleStore, now: float) -> list[dict[str, Any]]:
    """Every stored schedule entry, ordered by name. Raises ScheduleStoreError."""
    return [schedule_view(entry, now) for entry in store.entries()]


def in_flight(workers: Iterable[Mapping[str, Any]]) -> int:
    """Tasks running right now on workers that are not stale."""
    return sum(len(view.get("active") or []) for view in workers if not view.get("stale"))


def worker_states(workers: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """`{"live": n, "stale": n}`: workers with a kept heartbeat, by staleness."""
    flags = [bool(view.get("stale")) for view in workers]
    return {"live": flags.count(False), "stale": flags.count(True)}


def by_queue_state(queues: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """`(queue, state) -> count` for the queue depth gauge."""
    depth: dict[tuple[str, str], int] = defaultdict(int)
    for row in queues:
        for state in ("pending", "delayed", "in_flight", "dead"):
            depth[(str(row["name"]), state)] = int(row[state])
    return dict(depth)
