"""Prometheus rendering, worker-side counting and the observe views, on plain data."""

from __future__ import annotations

from typing import Any

import pytest

from stemrun.backends.memory import MemoryBackend
from stemrun.backends.record import Transition
from stemrun.brokers.base import Delivery
from stemrun.config.model import TaskConfig
from stemrun.envelope import Envelope
from stemrun.metrics import Snapshot, render
from stemrun.observe import totals, worker_view
from stemrun.state import TaskState
from stemrun.telemetry import ActiveTask, Heartbeat, counter_name, heartbeat_ttl, parse_counters
from stemrun.worker.execute import Outcome
from stemrun.worker.lease import Held
from stemrun.worker.metrics import Recorder
from stemrun.worker.settle import Settlement
from tests.metrics_parser import ExpositionError, parse

ODD = 'we"ird\\task\nname'


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


def test_render_is_valid_exposition_with_the_spec_names() -> None:
    raw = {
        counter_name("started", "email.send", "default"): 3,
        counter_name("succeeded", "email.send", "default"): 2,
        counter_name("failed", ODD, "default"): 1,
        counter_name("duration_bucket", "email.send", "default", "0.01"): 1,
        counter_name("duration_bucket", "email.send", "default", "1.0"): 1,
        counter_name("duration_bucket", "email.send", "default", "+Inf"): 1,
        counter_name("duration_us", "email.send", "default"): 500_005_000,
    }
    families = parse(render(_snapshot(raw)))
    for kind in ("started", "succeeded", "failed", "retried", "dead_lettered"):
        assert families[f"stem_tasks_{kind}_total"].type == "counter"
    assert families["stem_tasks_started_total"].value(task="email.send", queue="default") == 3
    assert families["stem_tasks_failed_total"].value(task=ODD, queue="default") == 1
    duration = families["stem_task_duration_seconds"]
    assert duration.type == "histogram"
    assert duration.total("stem_task_duration_seconds_count") == 3
    assert duration.total("stem_task_duration_seconds_sum") == pytest.approx(500.005)
    depth = families["stem_queue_depth"]
    assert depth.type == "gauge"
    assert depth.value(queue="default", state="pending") == 4
    assert depth.value(queue="default", state="dead") == 3
    assert families["stem_queue_paused"].value(queue="default") == 1
    assert families["stem_tasks_in_flight"].value() == 2  # the stale worker's task is not counted
    assert families["stem_schedule_drift_seconds"].value(schedule="nightly") == 1.5


def test_histogram_buckets_are_cumulative() -> None:
    raw = {
        counter_name("duration_bucket", "t", "q", "0.005"): 2,
        counter_name("duration_bucket", "t", "q", "0.5"): 3,
        counter_name("duration_us", "t", "q"): 1,
    }
    samples = parse(render(_snapshot(raw)))["stem_task_duration_seconds"].samples
    buckets = {lab["le"]: v for name, lab, v in samples if name.endswith("_bucket")}
    assert buckets["0.005"] == 2 and buckets["0.25"] == 2 and buckets["0.5"] == 5
    assert buckets["+Inf"] == 5


@pytest.mark.parametrize(
    "text",
    [
        "stem_x 1\n",  # no TYPE
        "# TYPE stem_x counter\nstem_x{a=b} 1\n",  # unquoted label
        "# TYPE stem_x counter\nstem_x one\n",  # not a number
        "# TYPE stem_x counter\nstem_x 1\nstem_x 2\n",  # duplicate series
        "# TYPE stem_x counter\nstem_x 1",  # no final newline
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    ],
)
def test_the_test_parser_is_strict(text: str) -> None:
    with pytest.raises(ExpositionError):
        parse(text)


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
    families = parse(render(Snapshot(counters=parse_counters(backend.counters()))))
    duration = families["stem_task_duration_seconds"]
    assert duration.total("stem_task_duration_seconds_count") == 2
    assert duration.total("stem_task_duration_seconds_sum") == pytest.approx(2.2)
