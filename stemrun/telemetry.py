"""What workers write for others to read: counter names, histogram buckets, heartbeat records.

Workers add to named counters in the result backend and publish a heartbeat there; `observe`,
the Prometheus endpoint and the dashboard read them back. Both sides use the names and shapes
defined here and nothing else, so this module imports nothing of stemrun.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Outcome counters per task and queue (`stem_tasks_<kind>_total`).
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveTask:
    """A task a worker is running, as its heartbeat reports it."""

    id: str
    task: str | None
    queue: str
    attempt: int
    started_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """One worker's heartbeat record; the store sets `last_heartbeat` when it keeps it."""

    id: str
    host: str
    pid: int
    group: str | None = None
    queues: tuple[str, ...] = ()
    concurrency: int = 0
    pool: str = "process"
    active: tuple[ActiveTask, ...] = ()
    processed: int = 0
    failed: int = 0
    started_at: float = 0.0
    heartbeat_interval_s: float = DEFAULT_INTERVAL_S
    last_heartbeat: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def stale(self, now: float) -> bool:
        """True when the worker missed `STALE_AFTER_BEATS` heartbeats."""
        return now - self.last_heartbeat > STALE_AFTER_BEATS * self.heartbeat_interval_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, `extra` merged in (the stored form)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        extra = data.pop("extra")
        data["queues"] = list(self.queues)
        data["active"] = [dataclasses.asdict(task) for task in self.active]
        return {**extra, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Heartbeat:
        """The heartbeat stored as `data`; unknown keys are kept in `extra`.

        Raises KeyError / TypeError / ValueError for a record without an id, host or pid.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in data.items() if key in known}
        values["queues"] = tuple(values.get("queues") or ())
        values["active"] = tuple(_active(item) for item in values.get("active") or ())
        extra = {key: value for key, value in data.items() if key not in known}
        return cls(**values, extra=extra)

    def with_last_heartbeat(self, now: float) -> Heartbeat:
        """This heartbeat as kept at `now`."""
        return dataclasses.replace(self, last_heartbeat=now)


def _active(item: Mapping[str, Any]) -> ActiveTask:
    names = {f.name for f in dataclasses.fields(ActiveTask)}
    return ActiveTask(**{key: value for key, value in item.items() if key in names})
