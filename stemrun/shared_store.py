"""What the broker and the result backend do together when they are one store.

Enqueue: a SQL database runs both inserts in one transaction; a Redis runs one script made of the
broker's and the backend's Lua functions. Any other pair (different stores, or the in-process
memory stores) goes through the outbox (stemrun.outbox). Fetch: on one Redis, the worker's fetch
also reads the fetched tasks' status records for the backend's next write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stemrun.backends.base import ResultBackend
from stemrun.backends.record import StatusRecord
from stemrun.backends.sql import SqlBackend
from stemrun.brokers.base import Broker, Delivery, Message
from stemrun.brokers.sql import SqlBroker
from stemrun.sql_db import SqlConnection
from stemrun.stores import kind_of

if TYPE_CHECKING:
    from stemrun.backends.redis import RedisBackend
    from stemrun.brokers.redis_streams import RedisStreamsBroker

#: Creates records and publishes the messages of the new ones in one write; True where new.
SingleWrite = Callable[[Sequence[StatusRecord], Sequence[Message]], list[bool]]
#: `Broker.fetch`, or one that also reads the fetched tasks' status records for the backend.
Fetch = Callable[..., list[Delivery]]


def single_write(broker: Broker, backend: ResultBackend) -> SingleWrite | None:
    """The one-write enqueue of this pair, or None when they are not one store."""
    if not _one_store(broker, backend):
        return None
    if isinstance(broker, SqlBroker) and isinstance(backend, SqlBackend):
        return _SqlWrite(broker, backend)
    redis = _redis_pair(broker, backend)
    return None if redis is None else _RedisWrite(*redis)


def fetch_for(broker: Broker, backend: ResultBackend) -> Fetch:
    """The worker's fetch: on one Redis, it also reads the fetched tasks' status records, so
    their `running` writes need no read of their own; elsewhere `broker.fetch`."""
    redis = _redis_pair(broker, backend) if _one_store(broker, backend) else None
    return broker.fetch if redis is None else _RedisFetch(*redis)


def _one_store(broker: Broker, backend: ResultBackend) -> bool:
    return (broker.url, broker.base_dir) == (backend.url, backend.base_dir)


def _redis_pair(
    broker: Broker, backend: ResultBackend
) -> tuple[RedisStreamsBroker, RedisBackend] | None:
    kind = kind_of(broker.url)
    if kind is None or kind.name != "Redis":
        return None
    from stemrun.backends.redis import RedisBackend
    from stemrun.brokers.redis_streams import RedisStreamsBroker

    if isinstance(broker, RedisStreamsBroker) and isinstance(backend, RedisBackend):
        return broker, backend
    return None


class _SqlWrite:
    """Both inserts in one transaction on the broker's connection."""

    def __init__(self, broker: SqlBroker[Any], backend: SqlBackend[Any]) -> None:
        self._broker = broker
        self._backend = backend
        self._backend_tables = False

    def __call__(self, records: Sequence[StatusRecord], messages: Sequence[Message]) -> list[bool]:
        if not self._backend_tables:  # a store creates its tables on its first connection
            self._backend.ping()
            self._backend_tables = True

        def write(conn: SqlConnection) -> list[bool]:
            created = self._backend.create_in(conn, records)
            fresh = [m for m, new in zip(messages, created, strict=True) if new]
            if fresh:
                self._broker.publish_in(conn, fresh)
            return created

        return self._broker.database.run("enqueue", write) if records else []


class _RedisWrite:
    """One script call: the backend's insert, then the broker's place, per record."""

    def __init__(self, broker: RedisStreamsBroker, backend: RedisBackend) -> None:
        from stemrun.redis_client import prelude

        self._broker = broker
        self._backend = backend
        source = (
            prelude("stemrun.brokers", "redis_streams.lua")
            + prelude("stemrun.backends", "redis.lua")
            + _section("record_and_publish.lua")
        )
        self._script = broker.register(source)

    def __call__(self, records: Sequence[StatusRecord], messages: Sequence[Message]) -> list[bool]:
        if not records:
            return []
        now = self._broker.clock.now()
        keys, rows = self._backend.record_args(records, now)
        args: list[Any] = [repr(now)]
        for row, message in zip(rows, self._broker.message_args(messages), strict=True):
            args += [*row, *message]
        created = self._broker.run_script(self._script, keys, args, "enqueue")
        return [bool(x) for x in created]


class _RedisFetch:
    """`Broker.fetch` that hands the status records it read to the backend's write cache."""

    def __init__(self, broker: RedisStreamsBroker, backend: RedisBackend) -> None:
        self._broker = broker
        self._backend = backend

    def __call__(self, queues: Sequence[str], limit: int, **options: Any) -> list[Delivery]:
        found = self._broker.fetch_peeking(
            queues, limit, peek=self._backend.status_prefix, **options
        )
        rows = {delivery.id: peeked for delivery, peeked in found}
        self._backend.remember_read(rows, self._broker.clock.now())
        return [delivery for delivery, _ in found]


def _section(filename: str) -> str:
    from importlib import resources

    return resources.files("stemrun").joinpath(filename).read_text(encoding="utf-8")
