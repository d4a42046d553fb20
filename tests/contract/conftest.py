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

from stemrun.backends.base import Backend
from stemrun.backends.memory import MemoryBackend
from stemrun.backends.sqlite import SqliteBackend
from stemrun.brokers.base import Broker
from stemrun.brokers.memory import MemoryBroker
from stemrun.brokers.sqlite import SqliteBroker
from stemrun.clock import ManualClock

_unique = itertools.count()


@dataclass(kw_only=True)
class StoreEnv:
    """What one test's store is made of: a private namespace, a scratch dir and the clock."""

    namespace: str
    tmp_path: Path
    clock: ManualClock
    opened: list[Broker | Backend] = field(default_factory=list)


def make_memory_broker(env: StoreEnv) -> Broker:
    return MemoryBroker.shared("memory://", namespace=env.namespace, clock=env.clock)


def make_sqlite_broker(env: StoreEnv) -> Broker:
    url = f"sqlite:///{env.tmp_path / 'stem.db'}"
    return SqliteBroker(url, namespace=env.namespace, clock=env.clock)


def make_memory_backend(env: StoreEnv) -> Backend:
    return MemoryBackend.shared("memory://", namespace=env.namespace, clock=env.clock)


def make_sqlite_backend(env: StoreEnv) -> Backend:
    url = f"sqlite:///{env.tmp_path / 'stem.db'}"
    return SqliteBackend(url, namespace=env.namespace, clock=env.clock)


BROKER_FACTORIES: dict[str, Callable[[StoreEnv], Broker]] = {
    "memory": make_memory_broker,
    "sqlite": make_sqlite_broker,
}
BACKEND_FACTORIES: dict[str, Callable[[StoreEnv], Backend]] = {
    "memory": make_memory_backend,
    "sqlite": make_sqlite_backend,
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
    MemoryBroker.reset_shared()
    MemoryBackend.reset_shared()


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
def backend_opener(request: pytest.FixtureRequest, store_env: StoreEnv) -> Callable[[], Backend]:
    """Opens another handle on this test's result backend store (closed at teardown)."""
    factory = BACKEND_FACTORIES[request.param]

    def opener() -> Backend:
        backend = factory(store_env)
        store_env.opened.append(backend)
        return backend

    return opener


@pytest.fixture
def backend(backend_opener: Callable[[], Backend]) -> Backend:
    return backend_opener()
