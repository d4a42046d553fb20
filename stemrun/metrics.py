"""Prometheus text exposition rendered from the stores, and the small HTTP server that serves it.

Every number comes from the shared stores (see stemrun/observe.py), not from the process that
serves it: any endpoint shows the totals of every worker. A worker serves `GET /metrics` on
`metrics.port` itself, except under `stemrun up`, whose supervisor serves the one endpoint for
all of its children (it sets `METRICS_SERVER_ENV` for them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stemrun.client import Stem
from stemrun.config.model import Config
from stemrun.errors import StemrunError
from stemrun.observe import by_queue_state, in_flight, queue_views, schedule_views, worker_views
from stemrun.schedules.store import ScheduleStore
from stemrun.stores import schedule_store_for
from stemrun.telemetry import (
    BUCKET,
    BUCKETS,
    DURATION_US,
    OUTCOMES,
    Counter,
    format_bound,
    parse_counters,
)

log = logging.getLogger("stemrun.metrics")

#: Set (to anything but "") in a worker's environment when another process serves the endpoint.
METRICS_SERVER_ENV = "STEMRUN_METRICS_SERVED_BY"
#: The interface the endpoint binds; loopback unless this environment variable says otherwise.
METRICS_HOST_ENV = "STEMRUN_METRICS_HOST"
DEFAULT_HOST = "127.0.0.1"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]

_HELP = {
    "started": "Attempts started.",
    "succeeded": "Attempts that succeeded.",
    "failed": "Tasks that failed for good (retries exhausted or rejected).",
    "retried": "Attempts that failed and were scheduled again.",
    "dead_lettered": "Envelopes moved to a dead-letter store.",
    "cancelled": "Tasks cancelled (stemrun cancel, or expired before they started).",
}


@dataclass(slots=True, kw_only=True)
class Snapshot:
    """The store-side numbers one scrape renders."""

    counters: list[Counter] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)


def collect(stem: Stem, now: float, schedules: ScheduleStore | None = None) -> Snapshot:
    """Read every store once. Raises BrokerError / BackendError (schedules are optional)."""
    snapshot = Snapshot(
        counters=parse_counters(stem.telemetry.counters()),
        queues=queue_views(stem),
        workers=worker_views(stem, now),
    )
    try:
        if schedules is not None:
            snapshot.schedules = schedule_views(schedules, now)
    except StemrunError as exc:  # a scrape without schedule drift beats no scrape
        log.warning("metrics: could not read the schedule store: %s", exc)
    return snapshot


def render(snapshot: Snapshot) -> str:
    """The snapshot in Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for kind in OUTCOMES:
        samples = _sum_by_labels(c for c in snapshot.counters if c.kind == kind)
        _family(lines, f"stem_tasks_{kind}_total", "counter", _HELP[kind], samples)
    _histogram(lines, snapshot.counters)
    depth: dict[Labels, float] = {
        (("queue", queue), ("state", state)): value
        for (queue, state), value in by_queue_state(snapshot.queues).items()
    }
    _family(lines, "stem_queue_depth", "gauge", "Messages per queue and state.", depth)
    paused: dict[Labels, float] = {
        (("queue", str(q["name"])),): float(bool(q.get("paused"))) for q in snapshot.queues
    }
    _family(lines, "stem_queue_paused", "gauge", "1 while the queue is paused.", paused)
    running: dict[Labels, float] = {(): in_flight(snapshot.workers)}
    _family(lines, "stem_tasks_in_flight", "gauge", "Tasks running on live workers.", running)
    workers: dict[Labels, float] = {
        (("state", "live"),): sum(1 for w in snapshot.workers if not w["stale"]),
        (("state", "stale"),): sum(1 for w in snapshot.workers if w["stale"]),
    }
    _family(lines, "stem_workers", "gauge", "Workers with a kept heartbeat.", workers)
    drift: dict[Labels, float] = {
        (("schedule", str(s["name"])),): float(s["drift_s"]) for s in snapshot.schedules
    }
    _family(
        lines,
        "stem_schedule_drift_seconds",
        "gauge",
        "How overdue each enabled schedule's next fire is.",
        drift,
    )
    return "\n".join(lines) + "\n"


def _sum_by_labels(counters: Iterable[Counter]) -> dict[Labels, float]:
    samples: dict[Labels, float] = defaultdict(float)
    for item in counters:
        samples[(("task", item.task), ("queue", item.queue))] += item.value
    return dict(samples)


def _family(
    lines: list[str], name: str, kind: str, help_text: str, samples: Mapping[Labels, float]
) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in sorted(samples.items()):
        lines.append(f"{name}{_labels(labels)} {_number(value)}")


def _histogram(lines: list[str], counters: Iterable[Counter]) -> None:
    name = "stem_task_duration_seconds"
    lines.append(f"# HELP {name} Run time of attempts, from start to outcome.")
    lines.append(f"# TYPE {name} histogram")
    hits: dict[Labels, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sums: dict[Labels, int] = defaultdict(int)
    for item in counters:
        labels: Labels = (("task", item.task), ("queue", item.queue))
        if item.kind == BUCKET and item.le is not None:
            hits[labels][item.le] += item.value
        elif item.kind == DURATION_US:
            sums[labels] += item.value
    for labels in sorted(hits.keys() | sums.keys()):
        seen = 0
        for bound in [*map(format_bound, BUCKETS), "+Inf"]:
            seen += hits[labels].get(bound, 0)  # stored per bucket; exposed cumulative
            lines.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {seen}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(sums[labels] / 1e6)}")
        lines.append(f"{name}_count{_labels(labels)} {seen}")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# -- the HTTP endpoint --------------------------------------------------------------------------


class MetricsServer:
    """`GET /metrics` on a thread of this process; one scrape at a time reads the stores."""

    def __init__(self, config: Config, port: int, host: str | None = None) -> None:
        """Raises OSError when the port cannot be bound."""
        self._stem = Stem(config)
        self._schedules: ScheduleStore | None = None
        self._lock = threading.Lock()
        bind = host or os.environ.get(METRICS_HOST_ENV) or DEFAULT_HOST
        self._httpd = _Http((bind, port), _Handler)
        self._httpd.scrape = self.scrape
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="stemrun-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        """Serve in the background; returns self."""
        self._thread.start()
        log.info("serving metrics on http://%s:%d/metrics", *self._httpd.server_address[:2])
        return self

    def scrape(self) -> str:
        """The exposition text now. Raises StemrunError when a store fails."""
        with self._lock:
            if self._schedules is None:
                try:
                    self._schedules = schedule_store_for(self._stem.config)
                except StemrunError as exc:
                    log.warning("metrics: no schedule store: %s", exc)
            return render(collect(self._stem, time.time(), self._schedules))

    def close(self) -> None:
        """Stop serving and close the stores."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            if self._schedules is not None:
                self._schedules.close()
            self._stem.close()


def serve_worker_metrics(config: Config) -> MetricsServer | None:
    """A `stemrun worker`'s endpoint, unless another process (`stemrun up`) serves it."""
    if os.environ.get(METRICS_SERVER_ENV):
        return None
    return serve(config, who="worker")


def serve(config: Config, *, who: str) -> MetricsServer | None:
    """Start the endpoint when `metrics.port` is set; None when off or the port is taken.

    A taken port is a warning, not a failure: every endpoint shows the same store-wide numbers.
    """
    if config.metrics_port is None:
        return None
    try:
        return MetricsServer(config, config.metrics_port).start()
    except OSError as exc:
        log.warning("%s: not serving metrics on port %d: %s", who, config.metrics_port, exc)
        return None


def follow_metrics(server: MetricsServer | None, old: Config, new: Config) -> MetricsServer | None:
    """After a reload: the same endpoint, or a new one when the port or the stores changed."""
    if _endpoint_key(old) == _endpoint_key(new):
        return server
    if server is not None:
        server.close()
    return serve(new, who="supervisor")


def _endpoint_key(config: Config) -> tuple[Any, ...]:
    stores = (config.broker, config.result_backend, config.schedule_store, config.namespace)
    return (config.metrics_port, *stores, tuple(config.queues), config.tls)


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    scrape: Any = None


class _Handler(BaseHTTPRequestHandler):
    server: _Http

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._reply(404, "text/plain; charset=utf-8", "not found: try /metrics\n")
            return
        try:
            body = self.server.scrape()
        except Exception as exc:  # the HTTP edge: a failed scrape is a 500, never a dead server
            log.exception("metrics scrape failed")
            self._reply(500, "text/plain; charset=utf-8", f"scrape failed: {exc}\n")
            return
        self._reply(200, CONTENT_TYPE, body)

    def _reply(self, code: int, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)
