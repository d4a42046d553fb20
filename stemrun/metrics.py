"""The Prometheus endpoint: prometheus_client serving a collector that reads the stores per scrape.

Every number comes from the shared stores (see stemrun/observe.py), not from the process that
serves it: any endpoint shows the totals of every worker. A worker serves `GET /metrics` on
`metrics.port` itself, except under `stemrun up`, whose supervisor serves the one endpoint for
all of its children (it sets `METRICS_SERVER_ENV` for them). Metric names, types and labels are
documented in docs/observability.md. prometheus_client is imported only by the functions that
serve, so importing this module (every `stemrun` command does) stays cheap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stemrun.client import Stem
from stemrun.config.model import Config
from stemrun.errors import StemrunError
from stemrun.observe import (
    by_queue_state,
    duration_series,
    in_flight,
    outcome_series,
    queue_views,
    schedule_views,
    worker_states,
    worker_views,
)
from stemrun.schedules.store import ScheduleStore
from stemrun.stores import schedule_store_for
from stemrun.telemetry import Counter, parse_counters

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

log = logging.getLogger("stemrun.metrics")

#: Set (to anything but "") in a worker's environment when another process serves the endpoint.
METRICS_SERVER_ENV = "STEMRUN_METRICS_SERVED_BY"
#: The interface the endpoint binds; loopback unless this environment variable says otherwise.
METRICS_HOST_ENV = "STEMRUN_METRICS_HOST"
DEFAULT_HOST = "127.0.0.1"

TASK_LABELS = ("task", "queue")

_HELP = {
    "stem_tasks_started_total": "Attempts started.",
    "stem_tasks_succeeded_total": "Attempts that succeeded.",
    "stem_tasks_failed_total": "Tasks that failed for good (retries exhausted or rejected).",
    "stem_tasks_retried_total": "Attempts that failed and were scheduled again.",
    "stem_tasks_dead_lettered_total": "Envelopes moved to a dead-letter store.",
    "stem_tasks_cancelled_total": (
        "Tasks cancelled (stemrun cancel, or expired before they started)."
    ),
    "stem_task_duration_seconds": "Run time of attempts, from start to outcome.",
    "stem_queue_depth": "Messages per queue and state.",
    "stem_queue_paused": "1 while the queue is paused.",
    "stem_tasks_in_flight": "Tasks running on live workers.",
    "stem_workers": "Workers with a kept heartbeat.",
    "stem_schedule_drift_seconds": "How overdue each enabled schedule's next fire is.",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The store-side numbers one scrape exposes."""

    counters: Sequence[Counter] = ()
    queues: Sequence[Mapping[str, Any]] = ()
    workers: Sequence[Mapping[str, Any]] = ()
    schedules: Sequence[Mapping[str, Any]] = ()


def read(stem: Stem, now: float, schedules: ScheduleStore | None = None) -> Snapshot:
    """Read every store once. Raises BrokerError / BackendError (schedules are optional)."""
    counters = parse_counters(stem.telemetry.counters())
    queues, workers = queue_views(stem), worker_views(stem, now)
    drift: list[dict[str, Any]] = []
    try:
        if schedules is not None:
            drift = schedule_views(schedules, now)
    except StemrunError as exc:  # a scrape without schedule drift beats no scrape
        log.warning("metrics: could not read the schedule store: %s", exc)
    return Snapshot(counters=counters, queues=queues, workers=workers, schedules=drift)


def families(snapshot: Snapshot) -> list[Metric]:
    """Every metric family of docs/observability.md, with the snapshot's samples."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    found: list[Metric] = []
    for kind, series in outcome_series(snapshot.counters).items():
        name = f"stem_tasks_{kind}_total"
        counter = CounterMetricFamily(name, _HELP[name], labels=TASK_LABELS)
        for labels, total in series.items():
            counter.add_metric(labels, total)
        found.append(counter)
    name = "stem_task_duration_seconds"
    histogram = HistogramMetricFamily(name, _HELP[name], labels=TASK_LABELS)
    for labels, (buckets, sum_s) in duration_series(snapshot.counters).items():
        histogram.add_metric(labels, [(le, float(n)) for le, n in buckets], sum_value=sum_s)
    return [*found, histogram, *_gauges(snapshot)]


def _gauges(snapshot: Snapshot) -> list[Metric]:
    depth = {key: float(n) for key, n in by_queue_state(snapshot.queues).items()}
    paused = {(str(q["name"]),): float(bool(q.get("paused"))) for q in snapshot.queues}
    workers = {(state,): float(n) for state, n in worker_states(snapshot.workers).items()}
    drift = {(str(s["name"]),): float(s["drift_s"]) for s in snapshot.schedules}
    return [
        _gauge("stem_queue_depth", ("queue", "state"), depth),
        _gauge("stem_queue_paused", ("queue",), paused),
        _gauge("stem_tasks_in_flight", (), {(): float(in_flight(snapshot.workers))}),
        _gauge("stem_workers", ("state",), workers),
        _gauge("stem_schedule_drift_seconds", ("schedule",), drift),
    ]


def _gauge(name: str, labels: Sequence[str], samples: Mapping[Any, float]) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    gauge = GaugeMetricFamily(name, _HELP[name], labels=labels)
    for values, value in sorted(samples.items()):
        gauge.add_metric(values, value)
    return gauge


class StoreCollector:
    """A prometheus_client collector reading the stores on every scrape, one scrape at a time."""

    def __init__(self, stem: Stem) -> None:
        self._stem = stem
        self._schedules: ScheduleStore | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """The families without samples, read from no store: how `?name[]=` filters find us."""
        return families(Snapshot())

    def collect(self) -> list[Metric]:
        """The families now. Raises StemrunError when the broker or result backend fails."""
        with self._lock:
            return families(read(self._stem, time.time(), self._schedule_store()))

    def _schedule_store(self) -> ScheduleStore | None:
        if self._schedules is None:
            try:
                self._schedules = schedule_store_for(self._stem.config)
            except StemrunError as exc:  # tried again at the next scrape
                log.warning("metrics: no schedule store: %s", exc)
        return self._schedules

    def close(self) -> None:
        """Close the stores (after the last scrape)."""
        with self._lock:
            if self._schedules is not None:
                self._schedules.close()
            self._stem.close()


# -- the HTTP endpoint --------------------------------------------------------------------------


class MetricsServer:
    """`GET /metrics` from prometheus_client's WSGI app, on a daemon thread of this process."""

    def __init__(
        self, config: Config, port: int, host: str | None = None, extra: Sequence[Collector] = ()
    ) -> None:
        """Raises OSError when the port cannot be bound. `extra`: this process's own series."""
        from prometheus_client import CollectorRegistry, make_wsgi_app

        self._collector = StoreCollector(Stem(config))
        registry = CollectorRegistry()  # not the global one: it holds this process's own metrics
        registry.register(self._collector)
        for collector in extra:
            registry.register(collector)
        bind = host or os.environ.get(METRICS_HOST_ENV) or DEFAULT_HOST
        try:
            self._httpd = _bind(bind, port, _only_metrics(make_wsgi_app(registry)))
        except OSError:
            self._collector.close()
            raise
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

    def close(self) -> None:
        """Stop serving and close the stores."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._collector.close()


def _bind(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    """A threading WSGI server bound to host:port, logging requests at debug level only."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: " + format, *args)

    return make_server(
        host, port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    """`app` on /metrics, 404 elsewhere; a failed scrape is a logged 500, never a dead server."""

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _reply(start_response, "404 Not Found", "not found: try /metrics\n")
        try:
            return app(environ, start_response)
        except Exception as exc:  # the HTTP edge
            log.exception("metrics scrape failed")
            return _reply(start_response, "500 Internal Server Error", f"scrape failed: {exc}\n")

    return serve


def _reply(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]


def serve_worker_metrics(config: Config) -> MetricsServer | None:
    """A `stemrun worker`'s endpoint, unless another process (`stemrun up`) serves it."""
    if os.environ.get(METRICS_SERVER_ENV):
        return None
    return serve(config, who="worker")


def serve(config: Config, *, who: str, extra: Sequence[Collector] = ()) -> MetricsServer | None:
    """Start the endpoint when `metrics.port` is set; None when off or the port is taken.

    A taken port is a warning, not a failure: every endpoint shows the same store-wide numbers.
    """
    if config.metrics_port is None:
        return None
    try:
        return MetricsServer(config, config.metrics_port, extra=extra).start()
    except OSError as exc:
        log.warning("%s: not serving metrics on port %d: %s", who, config.metrics_port, exc)
        return None


def follow_metrics(
    server: MetricsServer | None, old: Config, new: Config, extra: Sequence[Collector] = ()
) -> MetricsServer | None:
    """After a reload: the same endpoint, or a new one when the port or the stores changed."""
    if _endpoint_key(old) == _endpoint_key(new):
        return server
    if server is not None:
        server.close()
    return serve(new, who="supervisor", extra=extra)


def _endpoint_key(config: Config) -> tuple[Any, ...]:
    stores = (config.broker, config.result_backend, config.schedule_store, config.namespace)
    return (config.metrics_port, *stores, tuple(config.queues), config.tls)
