"""The Postgres schedule store against a real server: versions, due entries, the beat lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from stemrun.clock import ManualClock
from stemrun.errors import ScheduleStoreError
from stemrun.schedules.postgres import PostgresScheduleStore
from stemrun.schedules.store import ScheduleEntry
from stemrun.stores import open_schedule_store


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(postgres_url: str, clock: ManualClock) -> Iterator[PostgresScheduleStore]:
    opened = PostgresScheduleStore(postgres_url, namespace="sch", clock=clock)
    yield opened
    opened.close()


def _entry(name: str, **fields: object) -> ScheduleEntry:
    values: dict[str, object] = {"name": name, "task": "t", "spec": "every:10s"}
    values.update(fields)
    return ScheduleEntry(**values)  # type: ignore[arg-type]


def test_open_schedule_store_picks_postgres_and_creates_tables(postgres_url: str) -> None:
    opened = open_schedule_store(postgres_url, namespace="app")
    try:
        assert isinstance(opened, PostgresScheduleStore)
        assert opened.add(_entry("a")) is not None
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT version, data->>'spec' FROM app_schedules").fetchone()
        assert row == (1, "every:10s")
    finally:
        opened.close()


def test_versions_fence_concurrent_writers(store: PostgresScheduleStore) -> None:
    added = store.add(_entry("a", args={"x": 1}))
    assert added is not None and added.version == 1
    assert store.add(_entry("a")) is None
    first = store.update(ScheduleEntry.from_dict({**added.to_dict(), "total_run_count": 1}))
    stale = store.update(ScheduleEntry.from_dict({**added.to_dict(), "total_run_count": 9}))
    assert first is not None and first.version == 2 and stale is None
    assert store.get("a") == first
    assert store.remove("a", version=1) is False
    assert store.remove("a", version=2) is True
    assert store.get("a") is None and store.remove("a") is False


def test_due_returns_enabled_entries_earliest_first(store: PostgresScheduleStore) -> None:
    store.add(_entry("late", next_run_at=30.0))
    store.add(_entry("early", next_run_at=10.0))
    store.add(_entry("off", next_run_at=5.0, enabled=False))
    store.add(_entry("unarmed"))
    assert [e.name for e in store.due(30.0)] == ["early", "late"]
    assert [e.name for e in store.due(30.0, limit=1)] == ["early"]
    assert store.due(9.0) == []
    assert store.next_due_at() == 10.0
    assert [e.name for e in store.entries()] == ["early", "late", "off", "unarmed"]


def test_lease_expires_after_its_ttl(store: PostgresScheduleStore, clock: ManualClock) -> None:
    assert store.acquire_lease("beat-1", ttl_s=10)
    assert not store.acquire_lease("beat-2", ttl_s=10)
    assert store.lease_owner() == "beat-1"
    clock.advance(5)
    assert store.renew_lease("beat-1", ttl_s=10)
    clock.advance(9)
    assert not store.acquire_lease("beat-2", ttl_s=10), "renewal moved the expiry"
    clock.advance(2)
    assert store.lease_owner() is None
    assert not store.renew_lease("beat-1", ttl_s=10), "an expired lease cannot be renewed"
    assert store.acquire_lease("beat-2", ttl_s=10)
    store.release_lease("beat-1")
    assert store.lease_owner() == "beat-2", "only the holder can release"
    store.release_lease("beat-2")
    assert store.acquire_lease("beat-1", ttl_s=10)


def test_one_of_many_racing_beats_gets_the_lease(postgres_url: str, clock: ManualClock) -> None:
    stores = [PostgresScheduleStore(postgres_url, namespace="race", clock=clock) for _ in range(4)]
    stores[0].ping()  # create the tables first: the race is about the lease
    won: list[str] = []
    start = threading.Barrier(len(stores))

    def contend(index: int) -> None:
        start.wait()
        if stores[index].acquire_lease(f"beat-{index}", ttl_s=10):
            won.append(f"beat-{index}")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(won) == 1 and stores[0].lease_owner() == won[0]
    finally:
        for opened in stores:
            opened.close()


def test_unreachable_store_names_the_masked_url() -> None:
    opened = open_schedule_store("postgresql://beat:hunter2@127.0.0.1:1/jobs")
    with pytest.raises(ScheduleStoreError) as caught:
        opened.ping()
    message = str(caught.value)
    assert "schedule store postgresql://beat:***@127.0.0.1:1/jobs: cannot connect" in message
    assert "hunter2" not in message
