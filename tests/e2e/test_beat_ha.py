"""Three `stemrun beat` processes on one schedule store; the leader is SIGKILLed midway.

Every fire must be published exactly once, on the entry's grid, and the schedule must not stall
for longer than the lease TTL plus one tick while a follower takes over.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from stemrun.schedules.store import ScheduleStore
from stemrun.stores import open_schedule_store
from tests import services
from tests.e2e.conftest import STEM_YAML, Project, wait_until

LOCK_TTL_S = 3.0
TICK_S = 1.0
RUN_S = 20.0
KILL_AT_S = 8.0
SLACK_S = 1.5  # process scheduling on a busy CI machine


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(schedule_store URL, namespace) for this run; Redis keys are deleted afterwards."""
    namespace = services.unique_namespace("ha")
    if request.param == "sqlite":
        yield "sqlite:///.stem/stem.db", namespace
        return
    url = services.require_redis()
    yield url, namespace
    services.delete_redis_namespace(url, namespace)


def write_config(project: Project, store: str, namespace: str) -> None:
    extra = f"""
namespace: {namespace}
schedule_store: {store}
beat: {{tick_interval: {TICK_S}s, lock_ttl: {LOCK_TTL_S}s}}
schedules:
  pulse: {{task: record, spec: "every:1s", args: {{n: 1}}}}
"""
    (project.root / "stem.yaml").write_text(textwrap.dedent(STEM_YAML) + extra)


def published(project: Project, namespace: str) -> tuple[dict[str, int], dict[str, float]]:
    """Messages per task id in the broker, and each fire's enqueue time (its status record)."""
    conn = sqlite3.connect(project.root / ".stem" / "stem.db")
    try:
        counts = dict(conn.execute(f"SELECT id, COUNT(*) FROM {namespace}_messages GROUP BY id"))
        rows = conn.execute(f"SELECT id, data FROM {namespace}_status")
        created = {row[0]: float(json.loads(row[1])["created_at"]) for row in rows}
    finally:
        conn.close()
    return counts, created


def scheduled_at(task_id: str) -> float:
    stamp = task_id.split(":", 2)[2]  # "sched:pulse:2024-01-01T00:00:00Z"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_each_fire_once_while_the_leader_is_killed(
    project: Project, store_url: tuple[str, str]
) -> None:
    url, namespace = store_url
    write_config(project, url, namespace)
    beats = {f"b{i}": project.start("beat", "--name", f"b{i}") for i in range(3)}
    store: ScheduleStore = open_schedule_store(url, namespace=namespace, base_dir=project.root)
    try:
        wait_until(lambda: store.lease_owner() is not None, 30, f"no leader:\n{project.logs()}")
        started = time.monotonic()
        time.sleep(KILL_AT_S)
        leader = store.lease_owner()
        assert leader in beats
        os.killpg(beats[leader].pid, signal.SIGKILL)
        beats[leader].wait(timeout=10)
        time.sleep(max(0.0, RUN_S - (time.monotonic() - started)))
        successor = store.lease_owner()
    finally:
        store.close()
    assert successor in beats and successor != leader, project.logs()
    for name, proc in beats.items():
        if name != leader:
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, project.logs()
    counts, created = published(project, namespace)
    fires = sorted(task_id for task_id in counts if task_id.startswith("sched:pulse:"))
    assert fires and all(counts[task_id] == 1 for task_id in fires), counts
    assert len(fires) >= RUN_S - LOCK_TTL_S - 4, fires
    times = [scheduled_at(task_id) for task_id in fires]
    steps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(step >= 1 and step == int(step) for step in steps), steps  # on the 1s grid
    limit = LOCK_TTL_S + TICK_S + SLACK_S
    assert max(steps) <= limit, steps
    sent = sorted(created[task_id] for task_id in fires)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    print(f"fires={len(fires)} max scheduled step={max(steps)}s max enqueue gap={max(gaps):.2f}s")
    assert max(gaps) <= limit, gaps


def test_beat_refuses_memory_stores(project: Project) -> None:
    text = textwrap.dedent(STEM_YAML).replace(
        "broker: sqlite:///.stem/stem.db",
        "broker: sqlite:///.stem/stem.db\nschedule_store: memory://",
    )
    (project.root / "stem.yaml").write_text(text)
    done = project.run("beat")
    assert done.returncode == 2
    assert "schedule_store memory://" in done.stderr and "cannot use memory://" in done.stderr


def test_beat_stops_cleanly_on_sigterm_and_hands_over_the_lease(project: Project) -> None:
    write_config(project, "sqlite:///.stem/stem.db", "solo")
    proc = project.start("beat", "--name", "solo-beat")
    store = open_schedule_store("sqlite:///.stem/stem.db", namespace="solo", base_dir=project.root)
    try:
        wait_until(lambda: store.lease_owner() == "solo-beat", 30, project.logs())
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, project.logs()
        assert store.lease_owner() is None  # released: a successor need not wait for the TTL
        entry = store.get("pulse")
        assert entry is not None and entry.total_run_count >= 1
    finally:
        store.close()
