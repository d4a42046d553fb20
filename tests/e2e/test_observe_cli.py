"""`stemrun observe`, the metrics endpoint and task log lines, with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Project, wait_until

# as the Prometheus parser names them: a counter's family drops its samples' `_total`
COUNTERS = [
    f"stem_tasks_{kind}"
    for kind in ("started", "succeeded", "failed", "retried", "dead_lettered", "cancelled")
]
GAUGES = ["stem_queue_depth", "stem_tasks_in_flight", "stem_schedule_drift_seconds"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _configure(project: Project, extra: str = "", visibility: str = "3s") -> None:
    """The e2e stem.yaml with one worker slot per process and optional extra sections."""
    text = f"""
    version: 1
    broker: sqlite:///.stem/stem.db
    prefetch_multiplier: 1
    queues:
      default: {{}}
    tasks:
      record: {{handler: "e2etasks:record", visibility_timeout: {visibility}}}
    workers:
      default:
        queues: [default]
        concurrency: 1
        pool: thread
    """
    (project.root / "stem.yaml").write_text(textwrap.dedent(text) + textwrap.dedent(extra))


def _enqueue(project: Project, count: int, sleep: float) -> None:
    """Enqueue `count` record tasks in one process (one batch)."""
    script = (
        "from stemrun import Stem\n"
        "with Stem.from_config('stem.yaml') as stem:\n"
        f"    items = [('record', {{'n': i, 'sleep': {sleep}}}) for i in range({count})]\n"
        "    stem.enqueue_many(items)\n"
    )
    done = project_python(project, script)
    assert done == 0


def project_python(project: Project, script: str) -> int:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env(), timeout=60
    )
    return proc.returncode


def _workers(project: Project) -> list[dict[str, Any]]:
    done = project.run("observe", "workers", "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _metrics(project: Project) -> dict[str, Any]:
    done = project.run("observe", "metrics", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _scrape(port: int) -> dict[str, Metric]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _total(family: Metric, sample: str | None = None, **labels: str) -> float:
    """Sum of the samples named `sample` (default: any) whose labels include `labels`."""
    return sum(
        s.value
        for s in family.samples
        if (sample is None or s.name == sample) and labels.items() <= s.labels.items()
    )


def _assert_documented_families(families: dict[str, Metric]) -> None:
    for name in COUNTERS:
        assert families[name].type == "counter", name
    assert families["stem_task_duration_seconds"].type == "histogram"
    for name in GAUGES:
        assert families[name].type == "gauge", name


def test_three_busy_workers_are_listed_and_totals_match_the_tasks_run(project: Project) -> None:
    _configure(project)
    for i in range(3):
        project.start("worker", "-n", f"w{i}")
    wait_until(lambda: len(_workers(project)) == 3, 30, f"3 workers never beat:\n{project.logs()}")
    _enqueue(project, 9, sleep=1.5)

    def all_busy() -> bool:
        rows = _workers(project)
        return len(rows) == 3 and all(row["active"] for row in rows)

    wait_until(all_busy, 30, f"not every worker got busy:\n{project.logs()}")
    rows = _workers(project)
    assert sorted(row["id"] for row in rows) == ["w0", "w1", "w2"]
    for row in rows:
        assert set(row) >= {"id", "host", "pid", "queues", "concurrency", "active"}
        assert set(row) >= {"processed", "failed", "last_heartbeat", "stale"}
        assert row["stale"] is False and row["queues"] == ["default"]
        assert row["active"][0]["task"] == "record" and row["active"][0]["runtime_s"] >= 0
    queues = project.run_json("observe", "queues", "--json")
    assert queues[0]["name"] == "default"
    assert queues[0]["pending"] + queues[0]["in_flight"] >= 1

    wait_until(lambda: len(project.ledger_lines()) == 9, 60, "the 9 tasks never all ran")
    wait_until(lambda: _metrics(project)["tasks"]["succeeded"] == 9, 15, "totals lag behind")
    totals = _metrics(project)
    assert totals["tasks"]["started"] == 9 == len(project.ledger_lines())
    assert totals["tasks"]["failed"] == totals["tasks"]["retried"] == 0
    assert totals["by_task"]["record"]["succeeded"] == 9
    processed = sum(row["processed"] for row in _workers(project))
    assert processed == 9


def test_a_killed_worker_turns_stale_within_three_heartbeats(project: Project) -> None:
    # visibility 1.5s: workers beat every 0.5s, so stale after 1.5s of silence
    _configure(project, visibility="1500ms")
    victim = project.start("worker", "-n", "victim")
    project.start("worker", "-n", "survivor")
    wait_until(lambda: len(_workers(project)) == 2, 30, f"workers never beat:\n{project.logs()}")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    def victim_stale() -> bool:
        rows = {row["id"]: row for row in _workers(project)}
        return rows["victim"]["stale"] is True

    wait_until(victim_stale, 10, "the killed worker never turned stale")
    assert time.monotonic() - killed_at < 1.5 + 2.5  # 3 intervals, plus CLI start-up slack
    rows = {row["id"]: row for row in _workers(project)}
    assert rows["survivor"]["stale"] is False
    text = project.run("observe", "workers")
    assert "STALE" in text.stdout and "victim" in text.stdout


def test_worker_serves_prometheus_metrics_from_the_stores(project: Project) -> None:
    port = _free_port()
    _configure(project, extra=f"metrics: {{port: {port}}}\n")
    project.start("worker", "-n", "solo")
    _enqueue(project, 4, sleep=0.0)
    wait_until(lambda: len(project.ledger_lines()) == 4, 30, f"tasks never ran:\n{project.logs()}")

    def counted() -> bool:
        try:
            families = _scrape(port)
        except OSError:
            return False
        return _total(families["stem_tasks_succeeded"]) == 4

    wait_until(counted, 15, f"the endpoint never showed 4 successes:\n{project.logs()}")
    families = _scrape(port)
    _assert_documented_families(families)
    assert _total(families["stem_tasks_started"], task="record", queue="default") == 4
    duration = families["stem_task_duration_seconds"]
    assert _total(duration, "stem_task_duration_seconds_count", task="record") == 4
    assert _total(families["stem_queue_depth"], queue="default", state="pending") == 0


def test_up_serves_one_endpoint_for_all_its_children(project: Project) -> None:
    port = _free_port()
    _configure(project, extra=f"metrics: {{port: {port}}}\n")
    text = (project.root / "stem.yaml").read_text().replace("concurrency: 1", "replicas: 2")
    (project.root / "stem.yaml").write_text(text)
    project.start("up", "--no-reload")
    wait_until(lambda: len(_workers(project)) == 2, 60, f"children never beat:\n{project.logs()}")
    _enqueue(project, 6, sleep=0.0)
    wait_until(lambda: len(project.ledger_lines()) == 6, 30, "tasks never ran")

    def counted() -> bool:
        try:
            return _total(_scrape(port)["stem_tasks_succeeded"]) == 6
        except OSError:
            return False

    wait_until(counted, 15, f"the endpoint never showed 6 successes:\n{project.logs()}")
    _assert_documented_families(_scrape(port))
    logs = project.logs()
    assert logs.count("serving metrics on") == 1  # the supervisor alone binds the port
    assert "not serving metrics" not in logs


def test_task_log_lines_carry_the_task_fields_in_json(project: Project) -> None:
    _configure(project)
    _enqueue(project, 2, sleep=0.0)
    done = project.run("worker", "--burst", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    task_lines = [e for e in events if str(e["message"]).startswith("task ")]
    assert {e["message"].split()[1] for e in task_lines} >= {"received", "started", "succeeded"}
    for event in task_lines:
        assert event["task"] == "record"
        assert event["task_id"] and event["attempt"] == 0
        assert event["queue"] == "default" and event["worker"]


@pytest.mark.parametrize("command", ["queues", "metrics", "schedules"])
def test_watch_off_a_terminal_prints_one_document_per_refresh(
    project: Project, command: str
) -> None:
    _configure(project)
    proc = project.start("observe", command, "--json", "--watch", "--interval", "200ms")
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    out = (project.root / "proc-0.log").read_text().splitlines()
    documents = [json.loads(line) for line in out if line.startswith(("[", "{"))]
    assert len(documents) >= 2
