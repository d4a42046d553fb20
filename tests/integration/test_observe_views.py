"""The observe views and the metrics endpoint over real stores, fed by in-process workers."""

from __future__ import annotations

import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from stemrun.client import Stem
from stemrun.config import load_config
from stemrun.config.model import Config
from stemrun.metrics import MetricsServer
from stemrun.observe import metric_totals, queue_views, schedule_views, worker_views
from stemrun.schedules.apply import apply_schedules
from stemrun.stores import schedule_store_for
from stemrun.worker import Worker

TASKS = """
import time

from stemrun.context import TaskContext


def work(ctx: TaskContext, seconds: float = 0.0):
    time.sleep(seconds)
    return "ok"


def boom():
    raise ValueError("no")
"""

YAML = """
version: 1
broker: {broker}
result_backend: {backend}
namespace: {namespace}
queues:
  default: {{}}
  other: {{}}
tasks:
  work: {{handler: "obstasks:work"}}
  boom:
    handler: "obstasks:boom"
    max_retries: 1
    retry_backoff: {{initial: 10ms, jitter: false}}
schedules:
  every-hour: {{task: work, spec: "every:1h"}}
"""


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    (tmp_path / "obstasks.py").write_text(TASKS)
    sqlite = f"sqlite:///{tmp_path / 'stem.db'}"
    namespace = "obs"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        namespace = request.getfixturevalue("redis_namespace")
        broker = backend = url
    elif request.param == "postgres":
        broker, backend = sqlite, request.getfixturevalue("postgres_url")
    else:
        broker = backend = sqlite
    text = YAML.format(broker=broker, backend=backend, namespace=namespace)
    (tmp_path / "stem.yaml").write_text(textwrap.dedent(text))
    return load_config(tmp_path / "stem.yaml")


@contextmanager
def running(config: Config, name: str) -> Iterator[Worker]:
    worker = Worker(config, pool="thread", concurrency=2, name=name, install_signal_handlers=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)


def _until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


def test_two_workers_totals_and_views(config: Config) -> None:
    with Stem(config) as stem, running(config, "a"), running(config, "b"):
        slow = stem.enqueue_many([("work", {"seconds": 3.0})] * 2)
        _until(lambda: sum(len(w["active"]) for w in worker_views(stem, time.time())) == 2)
        views = {w["id"]: w for w in worker_views(stem, time.time())}
        assert set(views) == {"a", "b"} and not any(w["stale"] for w in views.values())
        fast = stem.enqueue_many([("work", {}) for _ in range(5)])
        failing = stem.enqueue("boom")
        for task_id in [*slow, *fast, failing]:
            stem.wait(task_id, timeout=30)
        # counts reach the store right after the terminal states they count
        _until(lambda: metric_totals(stem)["tasks"]["succeeded"] == 7)
        _until(lambda: metric_totals(stem)["tasks"]["dead_lettered"] == 1)
        totals = metric_totals(stem)
    assert totals["by_task"]["work"] == {
        "started": 7,
        "succeeded": 7,
        "failed": 0,
        "retried": 0,
        "dead_lettered": 0,
        "cancelled": 0,
    }
    assert totals["by_task"]["boom"]["started"] == 2  # one retry, then it gives up
    assert totals["by_task"]["boom"]["retried"] == 1
    assert totals["by_task"]["boom"]["failed"] == 1
    assert totals["tasks"]["started"] == 9


def test_queue_and_schedule_views(config: Config) -> None:
    with Stem(config) as stem:
        stem.enqueue("work", queue="other")
        stem.enqueue("work", countdown=3600)
        stem.backend.set_paused("other", True)
        rows = {row["name"]: row for row in queue_views(stem)}
        assert rows["other"]["pending"] == 1 and rows["default"]["delayed"] == 1
        assert rows["other"]["paused"] is True and rows["default"]["paused"] is False
        store = schedule_store_for(config)
        try:
            apply_schedules(config, store, now=1000.0)
            (entry,) = schedule_views(store, 1000.0 + 30)
        finally:
            store.close()
    assert entry["name"] == "every-hour" and entry["enabled"] is True
    # an every: entry is due when applied; no beat fired it, so it is 30 s overdue
    assert entry["next_run_at"] == 1000.0 and entry["drift_s"] == pytest.approx(30.0)


def test_metrics_endpoint_on_port_zero(config: Config) -> None:
    server = MetricsServer(config, 0).start()
    try:
        with Stem(config) as stem, running(config, "m"):
            stem.wait(stem.enqueue("work"), timeout=30)
            _until(lambda: metric_totals(stem)["tasks"]["succeeded"] == 1)
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=10)
    finally:
        server.close()
    assert _sample(families["stem_tasks_succeeded"], task="work", queue="default") == 1
    assert _sample(families["stem_queue_depth"], queue="other", state="pending") == 0
    assert _sample(families["stem_workers"], state="live") == 0  # "m" removed its heartbeat


def _sample(family: Metric, **labels: str) -> float:
    (value,) = [s.value for s in family.samples if s.labels == labels]
    return value
