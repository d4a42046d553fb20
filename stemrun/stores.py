"""The store registry: which class serves each role for a URL scheme, and how to open it.

One row per storage technology. Adding a store is its modules, one row here and its fixture in
the contract suites (docs/architecture.md, "Adding a store"). Classes are named by module path
and imported only when a URL asks for them, so a SQLite user never loads the Redis or Postgres
client libraries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Unpack, cast

from stemrun.backends.base import ResultBackend
from stemrun.brokers.base import Broker
from stemrun.schedules.store import ScheduleStore
from stemrun.store_base import Store, StoreOptions
from stemrun.url import mask_url, scheme_of

if TYPE_CHECKING:
    from stemrun.config.model import Config


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreKind:
    """One storage technology: its URL schemes and the `module:Class` serving each role."""

    name: str
    schemes: tuple[str, ...]
    broker: str | None
    result_backend: str | None
    schedule_store: str | None
    #: The port a URL without one connects to (None: not a network store).
    default_port: int | None = None
    #: False for a store that lives inside one process (`up` and `worker` refuse it).
    shared_between_processes: bool = True


STORES = (
    StoreKind(
        name="SQLite",
        schemes=("sqlite",),
        broker="stemrun.brokers.sqlite:SqliteBroker",
        result_backend="stemrun.backends.sqlite:SqliteBackend",
        schedule_store="stemrun.schedules.sqlite:SqliteScheduleStore",
    ),
    StoreKind(
        name="Redis",
        schemes=("redis", "rediss"),
        broker="stemrun.brokers.redis_streams:RedisStreamsBroker",
        result_backend="stemrun.backends.redis:RedisBackend",
        schedule_store="stemrun.schedules.redis:RedisScheduleStore",
        default_port=6379,
    ),
    StoreKind(
        name="PostgreSQL",
        schemes=("postgresql", "postgres"),
        broker="stemrun.brokers.postgres:PostgresBroker",
        result_backend="stemrun.backends.postgres:PostgresBackend",
        schedule_store="stemrun.schedules.postgres:PostgresScheduleStore",
        default_port=5432,
    ),
    StoreKind(
        name="memory",
        schemes=("memory",),
        broker="stemrun.brokers.memory:MemoryBroker",
        result_backend="stemrun.backends.memory:MemoryBackend",
        schedule_store="stemrun.schedules.memory:MemoryScheduleStore",
        shared_between_processes=False,
    ),
)

_BY_SCHEME = {scheme: kind for kind in STORES for scheme in kind.schemes}
#: Every scheme a store answers, in registry order.
SCHEMES = tuple(_BY_SCHEME)
#: Each role (a stem.yaml key) and the contract its stores implement.
ROLES: dict[str, type[Store]] = {
    "broker": Broker,
    "result_backend": ResultBackend,
    "schedule_store": ScheduleStore,
}


def expected_schemes() -> str:
    """`sqlite://, redis://, ... or memory://` for messages about a URL."""
    names = [f"{scheme}://" for scheme in SCHEMES]
    return ", ".join(names[:-1]) + " or " + names[-1]


def kind_of(url: str) -> StoreKind | None:
    """The registry row serving `url`'s scheme, or None."""
    return _BY_SCHEME.get(scheme_of(url))


def process_local(url: str) -> bool:
    """True for a store that lives inside one process (memory://): no other process sees it."""
    kind = kind_of(url)
    return kind is not None and not kind.shared_between_processes


def store_class(role: str, url: str) -> type[Store]:
    """The class serving `role` (broker, result_backend, schedule_store) for `url`.

    Raises the role's error (BrokerError, ...) for an unknown scheme or a store without the role.
    """
    contract = ROLES[role]
    label = f"{contract.role} {mask_url(url)}"
    kind = kind_of(url)
    if kind is None:
        raise contract.error(
            f"{label}: unknown URL scheme {scheme_of(url)!r} (expected {expected_schemes()})"
        )
    path = getattr(kind, role)
    if path is None:
        raise contract.error(f"{label}: {kind.name} cannot serve as a {contract.role}")
    module_name, _, class_name = path.partition(":")
    cls: type[Store] = getattr(importlib.import_module(module_name), class_name)
    return cls


def options_for(config: Config) -> StoreOptions:
    """The store options stem.yaml sets: namespace, base directory, tls section."""
    return {"namespace": config.namespace, "base_dir": config.root_dir, "tls": config.tls}


def open_store(role: str, url: str, **options: Unpack[StoreOptions]) -> Store:
    """The store serving `role` (broker, result_backend, schedule_store) at `url`.

    Raises the role's error: unknown scheme, a store without the role, or one that cannot open.
    """
    cls = store_class(role, url)
    contract = ROLES[role]
    if not issubclass(cls, contract):  # a row naming the wrong class is a bug in this table
        raise TypeError(f"{cls.__name__} does not implement {contract.__name__}")
    return cls.open(url, **options)


def open_broker(url: str, **options: Unpack[StoreOptions]) -> Broker:
    """The broker at `url`. Raises BrokerError (unknown scheme, unreachable store)."""
    return cast(Broker, open_store("broker", url, **options))


def open_backend(url: str, **options: Unpack[StoreOptions]) -> ResultBackend:
    """The result backend at `url`. Raises BackendError."""
    return cast(ResultBackend, open_store("result_backend", url, **options))


def open_schedule_store(url: str, **options: Unpack[StoreOptions]) -> ScheduleStore:
    """The schedule store at `url`. Raises ScheduleStoreError."""
    return cast(ScheduleStore, open_store("schedule_store", url, **options))


def broker_for(config: Config) -> Broker:
    """The configured broker. Raises BrokerError."""
    return open_broker(config.broker, **options_for(config))


def backend_for(config: Config) -> ResultBackend:
    """The configured result backend. Raises BackendError."""
    return open_backend(config.result_backend, **options_for(config))


def schedule_store_for(config: Config) -> ScheduleStore:
    """The configured schedule store. Raises ScheduleStoreError."""
    return open_schedule_store(config.schedule_store, **options_for(config))
