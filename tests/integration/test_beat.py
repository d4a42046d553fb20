"""Beat against real SQLite stores, driven by a ManualClock: fires, grids, leases, idempotency."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stemrun.backends.sqlite import SqliteBackend
from stemrun.beat import Beat
from stemrun.brokers.sqlite import SqliteBroker
from stemrun.client import Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.schedules.apply import apply_schedules
from stemrun.schedules.sqlite import SqliteScheduleStore
from stemrun.schedules.store import ScheduleEntry, ScheduleStore

START = datetime(2024, 1, 10, 7, 59, 30, tzinfo=UTC).timestamp()


def make_config(tmp_path: Path, schedules: dict[str, Any], **beat: str) -> Config:
    return config_from_mapping(
        {
            "broker": f"sqlite:///{tmp_path / 'stem.db'}",
            "queues": {"default": {}, "reports": {}},
            "tasks": {
                "report": {"handler": "m:report", "queue": "reports", "max_retries": 7},
                "ping": {"handler": "m:ping"},
            },
            "beat": {"tick_interval": "1s", "lock_ttl": "10s", **beat},
            "schedules": schedules,
        },
        root_dir=tmp_path,
        env={},
    )


@dataclasses.dataclass
class Setup:
    config: Config
    clock: ManualClock
    tmp_path: Path
    opened: list[Any] = dataclasses.field(default_factory=list)

    def store(self) -> ScheduleStore:
        store = SqliteScheduleStore(self.config.schedule_store, clock=self.clock)
        self.opened.append(store)
        return store

    def beat(self, name: str, store: ScheduleStore | None = None) -> Beat:
        url = self.config.broker
        stem = Stem(
            self.config,
            broker=SqliteBroker(url, clock=self.clock),
            backend=SqliteBackend(url, clock=self.clock),
            clock=self.clock,
        )
        self.opened.append(stem)
        return Beat(
            self.config, store=store or self.store(), stem=stem, clock=self.clock, name=name
        )

    def published(self) -> list[tuple[str, str, float | None]]:
        """(id, queue, eta) of every message the broker holds, in publish order."""
        conn = sqlite3.connect(self.tmp_path / "stem.db")
        try:
            rows = conn.execute("SELECT id, queue, due_at FROM stem_messages ORDER BY seq")
            return [(row[0], row[1], row[2]) for row in rows]
        except sqlite3.OperationalError:
            return []  # the broker was never opened: nothing published
        finally:
            conn.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    ctx = Setup(config=make_config(tmp_path, {}), clock=ManualClock(START), tmp_path=tmp_path)
    yield ctx
    for handle in ctx.opened:
        handle.close()


def configure(setup: Setup, schedules: dict[str, Any], **beat: str) -> None:
    setup.config = make_config(setup.tmp_path, schedules, **beat)
    apply_schedules(setup.config, setup.store(), now=setup.clock.now())


def ids(setup: Setup) -> list[str]:
    return [row[0] for row in setup.published()]


def test_every_fires_when_applied_then_on_its_grid(setup: Setup) -> None:
    configure(setup, {"tick": {"task": "ping", "spec": "every:10s"}})
    beat = setup.beat("b1")
    for _ in range(25):  # 25 one-second ticks: fires at +0, +10, +20
        beat.tick()
        setup.clock.advance(1)
    assert ids(setup) == [
        "sched:tick:2024-01-10T07:59:30Z",
        "sched:tick:2024-01-10T07:59:40Z",
        "sched:tick:2024-01-10T07:59:50Z",
    ]
    entry = setup.store().get("tick")
    assert entry is not None and entry.total_run_count == 3
    assert entry.last_run_at == START + 20 and entry.next_run_at == START + 30


def test_cron_fires_at_its_instant_in_the_entry_zone(setup: Setup) -> None:
    configure(
        setup, {"paris": {"task": "ping", "spec": "cron:0 9 * * *", "timezone": "Europe/Paris"}}
    )
    beat = setup.beat("b1")
    beat.tick()  # 07:59:30Z = 08:59:30 Paris: not yet
    setup.clock.advance(29)
    beat.tick()
    assert ids(setup) == []
    setup.clock.advance(1)  # 08:00:00Z = 09:00 Paris
    assert [f.task_id for f in beat.tick().fires] == ["sched:paris:2024-01-10T08:00:00Z"]


def test_a_missed_schedule_fires_once_then_continues_its_grid(setup: Setup) -> None:
    configure(setup, {"tick": {"task": "ping", "spec": "every:1m"}})
    beat = setup.beat("b1")
    beat.tick()
    setup.clock.advance(3600 + 15)  # beat down for an hour: 60 fires missed
    fired = beat.tick().fires
    assert [f.task_id for f in fired] == ["sched:tick:2024-01-10T08:00:30Z"]  # once, not 60
    for _ in range(5):
        setup.clock.advance(1)
        beat.tick()
    entry = setup.store().get("tick")
    assert entry is not None
    assert entry.next_run_at == START + 3660  # the grid point after "now", on the grid
    setup.clock.advance(60)
    assert [f.task_id for f in beat.tick().fires] == ["sched:tick:2024-01-10T09:00:30Z"]
    assert len(ids(setup)) == 3


def test_only_the_lease_holder_fires_and_a_dead_leader_is_replaced(setup: Setup) -> None:
    configure(setup, {"tick": {"task": "ping", "spec": "every:1s"}}, lock_ttl="3s")
    a, b = setup.beat("a"), setup.beat("b")
    for _ in range(5):
        assert a.tick().leader and not b.tick().leader
        setup.clock.advance(1)
    # `a` dies without releasing: `b` leads once the lease lapses (3s), and only fires once
    # for the seconds missed in between, then every second again
    leaders = []
    for _ in range(6):
        leaders.append(b.tick().leader)
        setup.clock.advance(1)
    assert leaders == [False, False, True, True, True, True]
    fired = ids(setup)
    assert len(fired) == len(set(fired)) == 5 + 4
    assert fired[5] == "sched:tick:2024-01-10T07:59:35Z"  # the first missed fire, once


class AlwaysLeader(SqliteScheduleStore):
    """A store whose lease never refuses: two beats that both believe they lead."""

    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        return True


def test_two_beats_that_both_lead_still_enqueue_each_fire_once(setup: Setup) -> None:
    configure(setup, {"tick": {"task": "ping", "spec": "every:1s"}})
    stale = AlwaysLeader(setup.config.schedule_store, clock=setup.clock)
    setup.opened.append(stale)
    a, b = (
        setup.beat("a", AlwaysLeader(setup.config.schedule_store, clock=setup.clock)),
        setup.beat("b", stale),
    )
    setup.opened.append(a.store)
    # both read the same due entry before either advances it
    due_a, due_b = a.store.due(setup.clock.now()), b.store.due(setup.clock.now())
    assert due_a == due_b and len(due_a) == 1
    now = setup.clock.now()
    a._fire(due_a[0], now)
    b._fire(due_b[0], now)  # enqueue is a no-op, its versioned update loses
    assert ids(setup) == ["sched:tick:2024-01-10T07:59:30Z"]
    entry = setup.store().get("tick")
    assert entry is not None and entry.total_run_count == 1


def test_racing_beats_on_threads_never_duplicate_a_fire(setup: Setup) -> None:
    configure(setup, {"tick": {"task": "ping", "spec": "every:1s"}})
    beats = [
        setup.beat(f"b{i}", AlwaysLeader(setup.config.schedule_store, clock=setup.clock))
        for i in range(3)
    ]
    setup.opened.extend(beat.store for beat in beats)

    def run(beat: Beat) -> None:
        for _ in range(40):
            beat.tick()

    for _ in range(10):
        threads = [threading.Thread(target=run, args=(beat,)) for beat in beats]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        setup.clock.advance(1)
    fired = ids(setup)
    assert len(fired) == len(set(fired)) == 10


def test_at_in_the_past_fires_once_and_stays_spent_on_reapply(setup: Setup) -> None:
    schedules = {"once": {"task": "ping", "spec": "at:2020-01-01T00:00:00Z"}}
    configure(setup, schedules)
    beat = setup.beat("b1")
    assert [f.task_id for f in beat.tick().fires] == ["sched:once:2020-01-01T00:00:00Z"]
    entry = setup.store().get("once")
    assert entry is not None and not entry.enabled and entry.next_run_at is None
    diff = apply_schedules(setup.config, setup.store(), now=setup.clock.now())
    assert not diff.has_changes  # declared enabled, but a spent one-shot is not re-armed
    setup.clock.advance(60)
    assert beat.tick().fires == ()
    assert len(ids(setup)) == 1


def test_fire_uses_the_task_options_and_jitter_delays_but_keeps_the_identity(setup: Setup) -> None:
    configure(
        setup,
        {
            "r": {"task": "report", "spec": "every:1m", "jitter": "20s", "args": {"x": 1}},
            "p": {"task": "ping", "spec": "every:1m", "queue": "reports"},
        },
    )
    setup.beat("b1").tick()
    published = {row[0]: row for row in setup.published()}
    report = published["sched:r:2024-01-10T07:59:30Z"]
    assert report[1] == "reports"  # the task's queue from stem.yaml
    assert report[2] is not None and START <= report[2] <= START + 20
    assert published["sched:p:2024-01-10T07:59:30Z"][1] == "reports"  # the entry's queue wins
    stem = Stem(setup.config)
    setup.opened.append(stem)
    status = stem.status("sched:r:2024-01-10T07:59:30Z")
    assert status.args == {"x": 1} and status.task == "report"


def test_an_entry_whose_task_is_gone_records_the_error_and_moves_on(setup: Setup) -> None:
    configure(setup, {"tick": {"task": "ping", "spec": "every:1m"}})
    store = setup.store()
    entry = store.get("tick")
    assert entry is not None
    store.update(dataclasses.replace(entry, task="vanished"))
    setup.beat("b1").tick()
    after = store.get("tick")
    assert after is not None and after.total_run_count == 1
    assert after.last_error is not None and "vanished" in after.last_error
    assert after.next_run_at == START + 60
    assert ids(setup) == []


def test_apply_twice_is_a_no_op_and_an_edit_is_exactly_one_change(setup: Setup) -> None:
    schedules = {
        "a": {"task": "ping", "spec": "every:1m"},
        "b": {"task": "report", "spec": "cron:0 8 * * *", "timezone": "Europe/Paris"},
    }
    configure(setup, schedules)
    store = setup.store()
    again = apply_schedules(setup.config, store, now=setup.clock.now() + 5)
    assert not again.has_changes and again.unchanged == ("a", "b")
    edited = {**schedules, "b": {**schedules["b"], "spec": "cron:30 8 * * *"}}
    config = make_config(setup.tmp_path, edited)
    diff = apply_schedules(config, store, now=setup.clock.now())
    assert [c.name for c in diff.changed] == ["b"] and diff.changed[0].fields == ("spec",)
    assert diff.added == () and diff.removed == ()
    after = diff.changed[0].after
    assert (
        after is not None
        and after.next_run_at == datetime(2024, 1, 11, 7, 30, tzinfo=UTC).timestamp()
    )


def test_apply_keeps_undeclared_entries_unless_pruned(setup: Setup) -> None:
    configure(
        setup,
        {"a": {"task": "ping", "spec": "every:1m"}, "b": {"task": "ping", "spec": "every:1m"}},
    )
    config = make_config(setup.tmp_path, {"a": {"task": "ping", "spec": "every:1m"}})
    store = setup.store()
    kept = apply_schedules(config, store)
    assert kept.undeclared == ("b",) and store.get("b") is not None
    pruned = apply_schedules(config, store, prune=True)
    assert [c.name for c in pruned.removed] == ["b"] and store.get("b") is None


def test_changing_an_every_interval_keeps_the_last_run_as_anchor(setup: Setup) -> None:
    configure(setup, {"a": {"task": "ping", "spec": "every:10m"}})
    beat = setup.beat("b1")
    beat.tick()  # fires at START
    setup.clock.advance(120)
    config = make_config(setup.tmp_path, {"a": {"task": "ping", "spec": "every:5m"}})
    diff = apply_schedules(config, setup.store(), now=setup.clock.now())
    after = diff.changed[0].after
    assert after is not None and after.next_run_at == START + 300


def test_run_on_a_thread_stops_cleanly_and_releases_the_lease(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, {"tick": {"task": "ping", "spec": "every:100ms"}}, tick_interval="50ms"
    )
    beat = Beat(config, install_signal_handlers=False, name="embedded")
    thread = threading.Thread(target=beat.run)
    thread.start()
    store = SqliteScheduleStore(config.schedule_store)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entry = store.get("tick")
            if entry is not None and entry.total_run_count >= 3:
                break
            time.sleep(0.05)
        assert store.lease_owner() == "embedded"
        beat.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert store.lease_owner() is None
        entry = store.get("tick")
        assert entry is not None and entry.total_run_count >= 3
    finally:
        beat.stop()
        store.close()


def test_entries_from_the_store_survive_a_config_without_schedules(setup: Setup) -> None:
    """Beat fires what the store holds, e.g. entries applied with `schedule apply --file`."""
    store = setup.store()
    store.add(ScheduleEntry(name="adhoc", task="ping", spec="every:1h", next_run_at=START))
    assert [f.name for f in setup.beat("b1", store).tick().fires] == ["adhoc"]
