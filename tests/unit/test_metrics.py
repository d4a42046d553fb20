"""The Prometheus endpoint, worker-side counting and the observe views, on in-memory stores."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from stemrun.backends.memory import MemoryBackend
from stemrun.backends.record import Transition
from stemrun.brokers.base import Delivery
from stemrun.brokers.memory import MemoryBroker
from stemrun.client import Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.config.model import Config, TaskConfig
from stemrun.envelope import Envelope
from stemrun.errors import BrokerError
from stemrun.metrics import MetricsServer, Snapshot, StoreCollector, families
from stemrun.observe import totals, worker_view
from stemrun.schedules.store import ScheduleEntry
from stemrun.state import TaskState
from stemrun.store_base import InProcessStore
from stemrun.stores import schedule_store_for
from stemrun.telemetry import ActiveTask, Heartbeat, counter_name, heartbeat_ttl, parse_counters
from stemrun.worker.execute import Outcome
from stemrun.worker.lease import Held
from stemrun.worker.metrics import Recorder
from stemrun.worker.settle import Settlement

ODD = 'we"ird\\task\nname'


class _Fixed:
    """A collector exposing one snapshot, as the endpoint's collector would after reading it."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> list[Metric]:
        return families(self.snapshot)


def _scrape(collector: Any) -> dict[str, Metric]:
    """The exposition text a scrape returns, parsed as Prometheus parses it."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(family: Metric, **labels: str) -> float:
    """The one sample of `family` with exactly these labels."""
    (value,) = [s.value for s in family.samples if s.labels == labels]
    return value


def _total(family: Metric, suffix: str = "") -> float:
    return sum(s.value for s in family.samples if s.name == family.name + suffix)


def _snapshot(raw: dict[str, int]) -> Snapshot:
    queue = {"name": "default", "pending": 4, "delayed": 1, "in_flight": 2, "dead": 3}
    queue["paused"] = True
    workers = [
        {"id": "w1", "stale": False, "active": [{"id": "a"}, {"id": "b"}]},
        {"id": "w2", "stale": True, "active": [{"id": "c"}]},
    ]
    schedules = [{"name": "nightly", "drift_s": 1.5}, {"name": "hourly", "drift_s": 0.0}]
    return Snapshot(
        counters=parse_counters(raw), queues=[queue], workers=workers, schedules=schedules
    )


def test_a_scrape_has_the_documented_names_types_and_labels() -> None:
    raw = {
        counter_name("started", "email.send", "default"): 3,
        counter_name("succeeded", "email.send", "default"): 2,
        counter_name("failed", ODD, "default"): 1,
        counter_name("duration_bucket", "email.send", "default", "0.01"): 1,
        counter_name("duration_bucket", "email.send", "default", "1.0"): 1,
        counter_name("duration_bucket", "email.send", "default", "+Inf"): 1,
        counter_name("duration_us", "email.send", "default"): 500_005_000,
    }
    found = _scrape(_Fixed(_snapshot(raw)))
    for kind in ("started", "succeeded", "failed", "retried", "dead_lettered", "cancelled"):
        family = found[f"stem_tasks_{kind}"]  # the parser drops a counter's `_total`
        assert family.type == "counter"
        assert {s.name for s in family.samples} <= {f"stem_tasks_{kind}_total"}
    assert _value(found["stem_tasks_started"], task="email.send", queue="default") == 3
    assert _value(found["stem_tasks_failed"], task=ODD, queue="default") == 1  # escaped
    duration = found["stem_task_duration_seconds"]
    assert duration.type == "histogram"
    assert _total(duration, "_count") == 3
    assert _total(duration, "_sum") == pytest.approx(500.005)
    depth = found["stem_queue_depth"]
    assert depth.type == "gauge"
    assert _value(depth, queue="default", state="pending") == 4
    assert _value(depth, queue="default", state="dead") == 3
    assert _value(found["stem_queue_paused"], queue="default") == 1
    assert _value(found["stem_tasks_in_flight"]) == 2  # the stale worker's task is not counted
    assert _value(found["stem_workers"], state="live") == 1
    assert _value(found["stem_workers"], state="stale") == 1
    assert _value(found["stem_schedule_drift_seconds"], schedule="nightly") == 1.5
    assert found["stem_schedule_drift_seconds"].type == "gauge"


def test_histogram_buckets_are_cumulative() -> None:
    raw = {
        counter_name("duration_bucket", "t", "q", "0.005"): 2,
        counter_name("duration_bucket", "t", "q", "0.5"): 3,
        counter_name("duration_us", "t", "q"): 1,
    }
    samples = _scrape(_Fixed(_snapshot(raw)))["stem_task_duration_seconds"].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    assert list(buckets) == [
        *("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0"),
        *("10.0", "30.0", "60.0", "300.0", "+Inf"),
    ]
    assert buckets["0.005"] == 2 and buckets["0.25"] == 2 and buckets["0.5"] == 5
    assert buckets["+Inf"] == 5
    assert {(s.labels["task"], s.labels["queue"]) for s in samples} == {("t", "q")}


def test_a_scrape_with_no_data_still_declares_every_family() -> None:
    found = _scrape(_Fixed(Snapshot()))
    outcomes = ("started", "succeeded", "failed", "retried", "dead_lettered", "cancelled")
    assert set(found) == {
        *(f"stem_tasks_{kind}" for kind in outcomes),
        "stem_task_duration_seconds",
        "stem_queue_depth",
        "stem_queue_paused",
        "stem_tasks_in_flight",
        "stem_workers",
        "stem_schedule_drift_seconds",
    }
    assert found["stem_schedule_drift_seconds"].samples == []
    assert _value(found["stem_tasks_in_flight"]) == 0


@pytest.fixture
def memory_config(tmp_path: Path) -> Iterator[Config]:
    yield config_from_mapping(
        {
            "broker": "memory://",
            "queues": {"default": {}, "mail": {}},
            "tasks": {"add": {"handler": "x:add"}},
        },
        root_dir=tmp_path,
    )
    InProcessStore.reset_all()


def _beat(worker: str, *tasks: str) -> Heartbeat:
    active = tuple(
        ActiveTask(id=task_id, task="add", queue="default", attempt=0, started_at=1.0)
        for task_id in tasks
    )
    return Heartbeat(id=worker, host="h", pid=1, active=active, heartbeat_interval_s=10.0)


def test_the_collector_reads_every_store_at_scrape_time(memory_config: Config) -> None:
    clock = ManualClock(time.time() - 3600)
    backend = MemoryBackend(clock=clock)
    with Stem(memory_config, broker=MemoryBroker(), backend=backend) as stem:
        backend.put_worker(_beat("gone", "t0"), ttl_s=7200)
        clock.advance(3600)
        backend.put_worker(_beat("busy", "t1", "t2"), ttl_s=60)
        stem.enqueue_many([("add", {}), ("add", {})])
        backend.set_paused("mail", True)
        backend.incr_counters({counter_name("succeeded", "add", "default"): 4})
        schedules = schedule_store_for(memory_config)
        schedules.add(ScheduleEntry(name="nightly", task="add", spec="every:1h", next_run_at=1.0))
        found = _scrape(StoreCollector(stem))
    assert _value(found["stem_tasks_succeeded"], task="add", queue="default") == 4
    assert _value(found["stem_queue_depth"], queue="default", state="pending") == 2
    assert _value(found["stem_queue_paused"], queue="mail") == 1
    assert _value(found["stem_queue_paused"], queue="default") == 0
    assert _value(found["stem_workers"], state="live") == 1
    assert _value(found["stem_workers"], state="stale") == 1
    assert _value(found["stem_tasks_in_flight"]) == 2  # not "gone"'s task
    assert _value(found["stem_schedule_drift_seconds"], schedule="nightly") > 3600


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_endpoint_answers_a_failed_scrape_with_500_and_keeps_serving(
    memory_config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = MetricsServer(memory_config, 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with monkeypatch.context() as patch:

            def broken(stem: Stem) -> list[dict[str, Any]]:
                raise BrokerError("broker memory://: down")

            patch.setattr("stemrun.metrics.queue_views", broken)
            status, body = _get(f"{base}/metrics")
            assert (status, body) == (500, "scrape failed: broker memory://: down\n")
        assert "metrics scrape failed" in caplog.text
        status, body = _get(f"{base}/metrics")
        assert _get(f"{base}/other")[0] == 404
        _, only = _get(f"{base}/metrics?name[]=stem_workers")
    finally:
        server.close()
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(body)}
    assert "stem_queue_depth" in names
    assert not [name for name in names if not name.startswith("stem_")]  # no process metrics
    assert [family.name for family in text_string_to_metric_families(only)] == ["stem_workers"]


def test_counter_names_round_trip_any_task_or_queue() -> None:
    raw = {counter_name("started", ODD, "q:1,2"): 5, counter_name("started", None, "q"): 1}
    parsed = {(c.task, c.queue): c.value for c in parse_counters({**raw, "foreign": 9})}
    assert parsed == {(ODD, "q:1,2"): 5, ("(unknown)", "q"): 1}


def test_totals_add_every_queue_per_task() -> None:
    raw = {
        counter_name("started", "a", "q1"): 2,
        counter_name("started", "a", "q2"): 3,
        counter_name("succeeded", "b", "q1"): 1,
        counter_name("duration_us", "a", "q1"): 99,
    }
    result = totals(parse_counters(raw))
    assert result["tasks"]["started"] == 5 and result["tasks"]["succeeded"] == 1
    assert result["by_task"]["a"]["started"] == 5
    assert set(result["tasks"]) >= {"started", "succeeded", "failed", "retried", "dead_lettered"}


def test_a_worker_is_stale_after_three_silent_intervals() -> None:
    active = ActiveTask(id="t", task="x", queue="q", attempt=0, started_at=90.0)
    beat = Heartbeat(
        id="w", host="h", pid=1, last_heartbeat=100.0, heartbeat_interval_s=2.0, active=(active,)
    )
    assert worker_view(beat, 105.9)["stale"] is False
    view = worker_view(beat, 106.1)
    assert view["stale"] is True
    assert view["active"][0]["runtime_s"] == pytest.approx(16.1)
    assert heartbeat_ttl(2.0) > 3 * 2.0  # kept after it turns stale


class _SpyBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def incr_counters(self, increments: Any) -> None:
        self.calls += 1
        super().incr_counters(increments)


def _delivery(task_id: str) -> Delivery:
    return Delivery(id=task_id, queue="q", body=b"", priority=0, receipt=task_id, deliveries=1)


def _settlement(task_id: str, event: Any, action: Any, state: TaskState | None) -> Settlement:
    transition = None if state is None else Transition(task_id=task_id, attempt=0, state=state)
    return Settlement(
        delivery=_delivery(task_id), action=action, event=event, transition=transition, task="t"
    )


def test_a_settled_batch_is_one_store_call() -> None:
    backend = _SpyBackend()
    recorder = Recorder(backend)
    for _ in range(3):
        recorder.started("t", "q")
    recorder.settled(
        [
            _settlement("1", "succeeded", "ack", TaskState.SUCCEEDED),
            _settlement("2", "retried", "requeue", TaskState.RETRIED),
            _settlement("3", "failed", "dead_letter", TaskState.FAILED),
            _settlement("4", "cancelled", "ack", TaskState.CANCELLED),
            _settlement("5", "skipped", "ack", None),
        ]
    )
    recorder.flush()
    recorder.flush()  # nothing new: no call
    assert backend.calls == 1
    got = totals(parse_counters(backend.counters()))["tasks"]
    assert got == {
        "started": 3,
        "succeeded": 1,
        "failed": 1,
        "retried": 1,
        "dead_lettered": 1,
        "cancelled": 1,
    }


def test_run_time_goes_to_the_histogram() -> None:
    backend = _SpyBackend()
    recorder = Recorder(backend)
    envelope = Envelope(id="1", task="t", queue="q")
    held = Held(
        delivery=_delivery("1"),
        envelope=envelope,
        task=TaskConfig(name="t", handler="m:f", queue="q", max_retries=0),
    )
    held.started_at = 10.0
    recorder.ran(held, Outcome(status="succeeded", runtime_s=0.2), now=11.0)
    recorder.ran(held, Outcome(status="failed"), now=12.0)  # killed: no measured run time
    recorder.flush()
    snapshot = Snapshot(counters=parse_counters(backend.counters()))
    duration = _scrape(_Fixed(snapshot))["stem_task_duration_seconds"]
    assert _total(duration, "_count") == 2
    assert _total(duration, "_sum") == pytest.approx(2.2)
