"""Fixtures that run every contract test against every store.

A store joins the suites by adding one factory to BROKER_FACTORIES / BACKEND_FACTORIES. A factory
receives the test's StoreEnv and returns a handle on the test's store; calling it again returns
another handle on the same store (another connection, where the store has connections), which is
how the suites exercise several producers and consumers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stemrun.backends.base import ResultBackend
from stemrun.backends.memory import MemoryBackend
from stemrun.backends.sqlite import SqliteBackend
from stemrun.brokers.base import Broker
from stemrun.brokers.memory import MemoryBroker
from stemrun.brokers.sqlite import SqliteBroker
from stemrun.clock import ManualClock
from stemrun.store_base import InProcessStore
from tests import services

_unique = itertools.count()


@dataclass(kw_only=True)
class StoreEnv:
    """What one test's store is made of: a private namespace, a scratch dir and the clock."""

    namespace: str
    tmp_path: Path
    clock: ManualClock
    opened: list[Broker | ResultBackend] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run after handles close
    urls: dict[str, str] = field(default_factory=dict)  # service -> this test's isolated URL


def make_memory_broker(env: StoreEnv) -> Broker:
    return MemoryBroker.open("memory://", namespace=env.namespace, clock=env.clock)


def make_sqlite_broker(env: StoreEnv) -> Broker:
    url = f"sqlite:///{env.tmp_path / 'stem.db'}"
    return SqliteBroker(url, namespace=env.namespace, clock=env.clock)


def make_memory_backend(env: StoreEnv) -> ResultBackend:
    return MemoryBackend.open("memory://", namespace=env.namespace, clock=env.clock)


def make_sqlite_backend(env: StoreEnv) -> ResultBackend:
    url = f"sqlite:///{env.tmp_path / 'stem.db'}"
    return SqliteBackend(url, namespace=env.namespace, clock=env.clock)


def postgres_store_url(env: StoreEnv) -> str:
    """This test's Postgres URL: a fresh schema as search_path, dropped at teardown."""
    if "postgres" not in env.urls:
        base = services.require_postgres()
        schema = f"c{env.namespace}_{services.unique_namespace()}"
        env.urls["postgres"] = services.create_postgres_schema(base, schema)
        env.cleanups.append(lambda: services.drop_postgres_schema(base, schema))
    return env.urls["postgres"]


def make_postgres_backend(env: StoreEnv) -> ResultBackend:
    from stemrun.backends.postgres import PostgresBackend

    return PostgresBackend(postgres_store_url(env), namespace=env.namespace, clock=env.clock)


def make_postgres_broker(env: StoreEnv) -> Broker:
    from stemrun.brokers.postgres import PostgresBroker

    return PostgresBroker(postgres_store_url(env), namespace=env.namespace, clock=env.clock)


def redis_store_namespace(env: StoreEnv) -> str:
    """This test's namespace on the test Redis (unique across sessions), deleted at teardown."""
    if "redis" not in env.urls:
        url, namespace = services.require_redis(), services.unique_namespace(env.namespace)
        env.urls["redis"] = namespace
        env.cleanups.append(lambda: services.delete_redis_namespace(url, namespace))
    return env.urls["redis"]


def make_redis_broker(env: StoreEnv) -> Broker:
    from stemrun.brokers.redis_streams import RedisStreamsBroker

    namespace = redis_store_namespace(env)
    return RedisStreamsBroker(services.REDIS_URL, namespace=namespace, clock=env.clock)


def make_redis_backend(env: StoreEnv) -> ResultBackend:
    from stemrun.backends.redis import RedisBackend

    namespace = redis_store_namespace(env)
    return RedisBackend(services.REDIS_URL, namespace=namespace, clock=env.clock)


BROKER_FACTORIES: dict[str, Callable[[StoreEnv], Broker]] = {
    "memory": make_memory_broker,
    "sqlite": make_sqlite_broker,
    "postgres": make_postgres_broker,
    "redis": make_redis_broker,
}
BACKEND_FACTORIES: dict[str, Callable[[StoreEnv], ResultBackend]] = {
    "memory": make_memory_backend,
    "sqlite": make_sqlite_backend,
    "postgres": make_postgres_backend,
    "redis": make_redis_backend,
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store_env(tmp_path: Path, clock: ManualClock) -> Iterator[StoreEnv]:
    env = StoreEnv(namespace=f"t{next(_unique)}", tmp_path=tmp_path, clock=clock)
    yield env
    for handle in env.opened:
        handle.close()
    for cleanup in env.cleanups:
        cleanup()
    InProcessStore.reset_all()


@pytest.fixture(params=sorted(BROKER_FACTORIES))
def broker_opener(request: pytest.FixtureRequest, store_env: StoreEnv) -> Callable[[], Broker]:
    """Opens another handle on this test's broker store (closed at teardown)."""
    factory = BROKER_FACTORIES[request.param]

    def opener() -> Broker:
        broker = factory(store_env)
        store_env.opened.append(broker)
        return broker

    return opener


@pytest.fixture
def broker(broker_opener: Callable[[], Broker]) -> Broker:
    return broker_opener()


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def backend_opener(
    request: pytest.FixtureRequest, store_env: StoreEnv
) -> Callable[[], ResultBackend]:
    """Opens another handle on this test's result backend store (closed at teardown)."""
    factory = BACKEND_FACTORIES[request.param]

    def opener() -> ResultBackend:
        backend = factory(store_env)
        store_env.opened.append(backend)
        return backend

    return opener


@pytest.fixture
def backend(backend_opener: Callable[[], ResultBackend]) -> ResultBackend:
    return backend_opener()
