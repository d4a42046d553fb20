"""What `stemrun observe` and the metrics endpoint show: views over the stores, never the caller.

Everything here reads the shared stores (broker queue counts, worker heartbeats and task counters
in the result backend, schedule entries), so any process on any machine sees every worker's
numbers. Task counters are named by `counter_name`; workers add to them once per settled batch
(stemrun/worker/metrics.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stemrun.client import Stem


class EntrySource(Protocol):
    """A schedule store, as far as the views need one (this module must not import schedules:
    beat imports the worker, which imports this)."""

    def entries(self) -> list[Any]: ...


#: Outcome counters per task and queue (`stem_tasks_<kind>_total`); SPEC keys first.
OUTCOMES = ("started", "succeeded", "failed", "retried", "dead_lettered", "cancelled")
#: Upper bounds (seconds) of the task duration histogram's buckets; +Inf is implied.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Counter kinds of the duration histogram: one bucket hit and the summed microseconds.
BUCKET, DURATION_US = "duration_bucket", "duration_us"
#: The task label of deliveries whose task could not be decoded.
UNKNOWN_TASK = "(unknown)"
#: A worker is stale after this many heartbeat intervals without a heartbeat.
STALE_AFTER_BEATS = 3
#: How long a silent worker's last heartbeat stays listed (as stale) before it expires.
STALE_KEEP_S = 600.0
#: A worker that starts tasks publishes its heartbeat within this, so `observe` shows them soon.
BUSY_BEAT_S = 1.0
#: The heartbeat interval assumed for a heartbeat that does not say.
DEFAULT_INTERVAL_S = 10.0


def counter_name(kind: str, task: str | None, queue: str, le: str | None = None) -> str:
    """The stored name of one counter: a JSON array, so any task or queue name round-trips."""
    parts = [kind, task or UNKNOWN_TASK, queue] + ([] if le is None else [le])
    return json.dumps(parts, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Counter:
    """One parsed counter: kind, task, queue, bucket bound (histogram only) and total."""

    kind: str
    task: str
    queue: str
    le: str | None
    value: int


def parse_counters(raw: Mapping[str, int]) -> list[Counter]:
    """The counters in `raw` that `counter_name` made (others are skipped), sorted by name."""
    parsed = []
    for name, value in sorted(raw.items()):
        try:
            parts = json.loads(name)
        except ValueError:
            continue
        if isinstance(parts, list) and len(parts) in (3, 4) and all(map(_is_text, parts)):
            le = parts[3] if len(parts) == 4 else None
            parsed.append(Counter(parts[0], parts[1], parts[2], le, int(value)))
    return parsed


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def bucket_of(seconds: float) -> str:
    """The histogram bucket bound (as its label text) that a duration falls into."""
    for bound in BUCKETS:
        if seconds <= bound:
            return format_bound(bound)
    return "+Inf"


def format_bound(bound: float) -> str:
    """A bucket bound as Prometheus writes it (`0.005`, `1.0`)."""
    return repr(float(bound))


def heartbeat_ttl(interval_s: float) -> float:
    """How long a heartbeat is kept: stale after 3 intervals, listed a while longer."""
    return STALE_AFTER_BEATS * interval_s + STALE_KEEP_S


# -- views --------------------------------------------------------------------------------------


def totals(counters: Iterable[Counter]) -> dict[str, Any]:
    """`{"tasks": {outcome: n}, "by_task": {task: {outcome: n}}}` (SPEC `observe metrics`)."""
    overall = dict.fromkeys(OUTCOMES, 0)
    by_task: dict[str, dict[str, int]] = {}
    for item in counters:
        if item.kind not in overall:
            continue
        overall[item.kind] += item.value
        row = by_task.setdefault(item.task, dict.fromkeys(OUTCOMES, 0))
        row[item.kind] += item.value
    return {"tasks": overall, "by_task": dict(sorted(by_task.items()))}


def metric_totals(stem: Stem) -> dict[str, Any]:
    """Task outcome totals across every worker since the store was created.

    Raises BackendError.
    """
    return totals(parse_counters(stem.backend.counters()))


def queue_views(stem: Stem) -> list[dict[str, Any]]:
    """Per declared queue: name, pending, delayed, in_flight, dead and paused.

    Raises BrokerError / BackendError.
    """
    names = list(stem.config.queues)
    stats = stem.broker.stats(names)
    paused = stem.backend.paused_queues()
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


def worker_view(beat: Mapping[str, Any], now: float) -> dict[str, Any]:
    """One heartbeat as `observe workers` shows it, with `stale` and each task's runtime."""
    interval = float(beat.get("heartbeat_interval_s") or DEFAULT_INTERVAL_S)
    last = float(beat.get("last_heartbeat") or 0.0)
    active = []
    for task in beat.get("active") or []:
        started = task.get("started_at")
        runtime = None if started is None else round(max(0.0, now - float(started)), 3)
        active.append({**task, "runtime_s": runtime})
    return {
        **beat,
        "id": beat.get("id"),
        "host": beat.get("host"),
        "pid": beat.get("pid"),
        "queues": beat.get("queues") or [],
        "concurrency": beat.get("concurrency"),
        "active": active,
        "processed": beat.get("processed", 0),
        "failed": beat.get("failed", 0),
        "last_heartbeat": last,
        "stale": now - last > STALE_AFTER_BEATS * interval,
    }


def worker_views(stem: Stem, now: float) -> list[dict[str, Any]]:
    """Every worker with a kept heartbeat (stale ones too), ordered by id. Raises BackendError."""
    views = [worker_view(beat, now) for beat in stem.backend.workers()]
    return sorted(views, key=lambda view: str(view["id"]))


def schedule_view(entry: Any, now: float) -> dict[str, Any]:
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


def schedule_views(store: EntrySource, now: float) -> list[dict[str, Any]]:
    """Every stored schedule entry, ordered by name. Raises ScheduleStoreError."""
    return [schedule_view(entry, now) for entry in store.entries()]


def in_flight(workers: Iterable[Mapping[str, Any]]) -> int:
    """Tasks running right now on workers that are not stale."""
    return sum(len(view.get("active") or []) for view in workers if not view.get("stale"))


def by_queue_state(queues: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """`(queue, state) -> count` for the queue depth gauge."""
    depth: dict[tuple[str, str], int] = defaultdict(int)
    for row in queues:
        for state in ("pending", "delayed", "in_flight", "dead"):
            depth[(str(row["name"]), state)] = int(row[state])
    return dict(depth)
