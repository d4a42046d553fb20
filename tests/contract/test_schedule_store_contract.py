"""The schedule store contract, run against every schedule store.

A store joins by adding one factory to SCHEDULE_STORE_FACTORIES. A factory receives the test's
StoreEnv (see conftest.py) and returns a handle on the test's store; calling it again returns
another handle on the same store, which is how two beats (or a beat and `apply`) are simulated.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator

import pytest

from stemrun.clock import ManualClock
from stemrun.errors import ScheduleStoreError
from stemrun.schedules.memory import MemoryScheduleStore
from stemrun.schedules.sqlite import SqliteScheduleStore
from stemrun.schedules.store import ScheduleEntry, ScheduleStore
from stemrun.store_base import InProcessStore
from tests import services
from tests.contract.conftest import StoreEnv, postgres_store_url, redis_store_namespace


def make_memory_store(env: StoreEnv) -> ScheduleStore:
    return MemoryScheduleStore.open("memory://", namespace=env.namespace, clock=env.clock)


def make_sqlite_store(env: StoreEnv) -> ScheduleStore:
    url = f"sqlite:///{env.tmp_path / 'stem.db'}"
    return SqliteScheduleStore(url, namespace=env.namespace, clock=env.clock)


def make_postgres_store(env: StoreEnv) -> ScheduleStore:
    from stemrun.schedules.postgres import PostgresScheduleStore

    return PostgresScheduleStore(postgres_store_url(env), namespace=env.namespace, clock=env.clock)


def make_redis_store(env: StoreEnv) -> ScheduleStore:
    from stemrun.schedules.redis import RedisScheduleStore

    namespace = redis_store_namespace(env)
    return RedisScheduleStore(services.REDIS_URL, namespace=namespace, clock=env.clock)


SCHEDULE_STORE_FACTORIES: dict[str, Callable[[StoreEnv], ScheduleStore]] = {
    "memory": make_memory_store,
    "sqlite": make_sqlite_store,
    "postgres": make_postgres_store,
    "redis": make_redis_store,
}

Opener = Callable[[], ScheduleStore]


@pytest.fixture(params=sorted(SCHEDULE_STORE_FACTORIES))
def schedule_store_opener(request: pytest.FixtureRequest, store_env: StoreEnv) -> Iterator[Opener]:
    """Opens another handle on this test's schedule store (closed at teardown)."""
    factory = SCHEDULE_STORE_FACTORIES[request.param]
    opened: list[ScheduleStore] = []

    def opener() -> ScheduleStore:
        store = factory(store_env)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
    InProcessStore.reset_all()


@pytest.fixture
def schedule_store(schedule_store_opener: Opener) -> ScheduleStore:
    return schedule_store_opener()


def entry(name: str = "digest", **fields: object) -> ScheduleEntry:
    values: dict[str, object] = {"name": name, "task": "email.send", "spec": "every:1m"}
    values.update(fields)
    return ScheduleEntry(**values)  # type: ignore[arg-type]


def test_add_stores_version_one_and_round_trips_every_field(schedule_store: ScheduleStore) -> None:
    full = entry(
        timezone="Europe/Paris",
        queue="mail",
        args={"plan": "premium", "ids": [1, 2]},
        jitter_s=2.5,
        enabled=False,
        last_run_at=1_700_000_000.25,
        next_run_at=1_700_000_060.25,
        total_run_count=7,
        last_error="boom",
    )
    stored = schedule_store.add(full)
    assert stored == dataclasses.replace(full, version=1)
    assert schedule_store.get("digest") == stored
    assert schedule_store.get("missing") is None


def test_add_refuses_an_existing_name(schedule_store: ScheduleStore) -> None:
    schedule_store.add(entry(spec="every:1m"))
    assert schedule_store.add(entry(spec="every:5m")) is None
    got = schedule_store.get("digest")
    assert got is not None and got.spec == "every:1m"


def test_entries_are_listed_by_name(schedule_store: ScheduleStore) -> None:
    for name in ("b", "c", "a"):
        schedule_store.add(entry(name))
    assert [e.name for e in schedule_store.entries()] == ["a", "b", "c"]


def test_update_at_the_stored_version_bumps_it(schedule_store: ScheduleStore) -> None:
    v1 = schedule_store.add(entry())
    assert v1 is not None
    v2 = schedule_store.update(dataclasses.replace(v1, total_run_count=1))
    assert v2 is not None and v2.version == 2
    assert schedule_store.get("digest") == v2


def test_a_stale_update_changes_nothing(schedule_store_opener: Opener) -> None:
    first, second = schedule_store_opener(), schedule_store_opener()
    first.add(entry())
    read_a, read_b = first.get("digest"), second.get("digest")
    assert read_a is not None and read_b is not None
    assert first.update(dataclasses.replace(read_a, total_run_count=1)) is not None
    assert second.update(dataclasses.replace(read_b, total_run_count=99)) is None
    got = second.get("digest")
    assert got is not None and got.total_run_count == 1 and got.version == 2


def test_update_of_a_missing_entry_fails(schedule_store: ScheduleStore) -> None:
    assert schedule_store.update(entry(version=1)) is None
    assert schedule_store.get("digest") is None


def test_remove_checks_the_version_when_given(schedule_store: ScheduleStore) -> None:
    schedule_store.add(entry())
    assert schedule_store.remove("digest", version=5) is False
    assert schedule_store.remove("digest", version=1) is True
    assert schedule_store.remove("digest") is False
    schedule_store.add(entry())
    assert schedule_store.remove("digest") is True


def test_due_lists_enabled_entries_whose_time_came_earliest_first(
    schedule_store: ScheduleStore,
) -> None:
    schedule_store.add(entry("late", next_run_at=300.0))
    schedule_store.add(entry("early", next_run_at=100.0))
    schedule_store.add(entry("mid", next_run_at=200.0))
    schedule_store.add(entry("off", next_run_at=50.0, enabled=False))
    schedule_store.add(entry("spent", next_run_at=None))
    assert [e.name for e in schedule_store.due(250.0)] == ["early", "mid"]
    assert [e.name for e in schedule_store.due(1000.0, limit=2)] == ["early", "mid"]
    assert schedule_store.due(99.0) == []
    assert schedule_store.next_due_at() == 100.0


def test_next_due_at_is_none_when_nothing_is_armed(schedule_store: ScheduleStore) -> None:
    assert schedule_store.next_due_at() is None
    schedule_store.add(entry(next_run_at=10.0, enabled=False))
    assert schedule_store.next_due_at() is None


def test_args_that_are_not_json_are_refused(schedule_store: ScheduleStore) -> None:
    with pytest.raises(ScheduleStoreError, match="args must be JSON"):
        schedule_store.add(entry(args={"when": object()}))
    assert schedule_store.get("digest") is None


def test_lease_has_one_holder_until_it_expires(
    schedule_store_opener: Opener, clock: ManualClock
) -> None:
    a, b = schedule_store_opener(), schedule_store_opener()
    assert a.acquire_lease("beat-a", ttl_s=10) is True
    assert b.acquire_lease("beat-b", ttl_s=10) is False
    assert b.lease_owner() == "beat-a"
    clock.advance(9)
    assert a.acquire_lease("beat-a", ttl_s=10) is True  # the holder extends it
    clock.advance(9)
    assert b.acquire_lease("beat-b", ttl_s=10) is False  # still held: renewed 9s ago
    clock.advance(1.5)
    assert b.acquire_lease("beat-b", ttl_s=10) is True  # lapsed: taken over
    assert a.lease_owner() == "beat-b"


def test_renew_only_extends_a_lease_still_held(
    schedule_store_opener: Opener, clock: ManualClock
) -> None:
    a, b = schedule_store_opener(), schedule_store_opener()
    assert a.renew_lease("beat-a", ttl_s=5) is False  # nobody holds it: renew is not acquire
    a.acquire_lease("beat-a", ttl_s=5)
    clock.advance(4)
    assert a.renew_lease("beat-a", ttl_s=5) is True
    assert b.renew_lease("beat-b", ttl_s=5) is False
    clock.advance(5)
    assert a.renew_lease("beat-a", ttl_s=5) is False  # expired: must acquire again
    assert a.lease_owner() is None


def test_release_frees_the_lease_for_its_holder_only(
    schedule_store_opener: Opener,
) -> None:
    a, b = schedule_store_opener(), schedule_store_opener()
    a.acquire_lease("beat-a", ttl_s=60)
    b.release_lease("beat-b")
    assert b.acquire_lease("beat-b", ttl_s=60) is False
    a.release_lease("beat-a")
    assert a.lease_owner() is None
    assert b.acquire_lease("beat-b", ttl_s=60) is True


def test_racing_read_modify_write_loses_no_update(schedule_store_opener: Opener) -> None:
    """Four handles increment one counter with optimistic retries: every increment lands."""
    handles = [schedule_store_opener() for _ in range(4)]
    handles[0].add(entry())
    per_handle = 25

    def bump(store: ScheduleStore) -> None:
        for _ in range(per_handle):
            while True:
                current = store.get("digest")
                assert current is not None
                bumped = dataclasses.replace(current, total_run_count=current.total_run_count + 1)
                if store.update(bumped) is not None:
                    break

    threads = [threading.Thread(target=bump, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = handles[0].get("digest")
    assert final is not None
    assert final.total_run_count == 4 * per_handle
    assert final.version == 1 + 4 * per_handle


def test_ping_answers(schedule_store: ScheduleStore) -> None:
    schedule_store.ping()
