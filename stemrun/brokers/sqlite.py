"""The embedded SQLite broker: durable, safe across worker processes on one machine.

Every write is one BEGIN IMMEDIATE transaction, so leasing (promote, select, update) is atomic
across processes and two consumers never hold the same message. The SQL lives in
`sqlite_queries.sql`; the state model is described at the top of that file. The broker logic is
`SqlBroker`'s; this class adds how SQLite finds due work and notices new work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Unpack

from stemrun.brokers.sql import SqlBroker
from stemrun.sql_db import SqlConnection
from stemrun.sqlite_db import SqliteDatabase
from stemrun.store_base import StoreOptions

#: How often a blocking fetch looks for new work; the latency floor of an idle worker.
POLL_INTERVAL_S = 0.005


class SqliteBroker(SqlBroker[SqliteDatabase]):
    """Broker on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises BrokerError naming the URL when the file cannot be opened or a query fails.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        # Our own commits do not move PRAGMA data_version, so they wake local waiters here.
        self._local_writes = 0
        self._local_cond = threading.Condition()

    def _open_database(self) -> SqliteDatabase:
        return SqliteDatabase(self, "stemrun.brokers", "sqlite_queries.sql")

    def _lease_queue(self, conn: SqlConnection, params: dict[str, Any]) -> list[Any]:
        # Time never writes to the file: delayed rows and lapsed leases become ready here.
        conn.execute(self._q["promote_due"], params)
        return super()._lease_queue(conn, params)

    def _wake(self, conn: SqlConnection, queues: Sequence[str]) -> None:
        # Before the commit is safe: a woken fetch leases through the database lock this
        # transaction holds, so it sees the new rows once they are committed.
        with self._local_cond:
            self._local_writes += 1
            self._local_cond.notify_all()

    def _next_due(self, conn: SqlConnection, queues: Sequence[str]) -> float | None:
        # One query per queue: each is a min() over an index range, whatever the backlog.
        dues = [conn.execute(self._q["next_due"], {"queue": q}).fetchone()[0] for q in queues]
        return min((due for due in dues if due is not None), default=None)

    def _wait_for_work(
        self, queues: Sequence[str], deadline: float, next_due: float | None
    ) -> None:
        """Sleep in short steps until work may be there or `deadline` passes.

        Wakes on a write through this object, a due timer, or another process's commit that
        left a ready message; that last check is a cheap read, so the many commits of unrelated
        status writes to the same file do not each cost a write lock. Raises BrokerError.
        """
        version = self._db.data_version()
        with self._local_cond:
            local = self._local_writes
        while time.monotonic() < deadline:
            if next_due is not None and self.clock.now() >= next_due:
                return
            with self._local_cond:
                if self._local_writes == local:
                    self._local_cond.wait(min(POLL_INTERVAL_S, deadline - time.monotonic()))
                if self._local_writes != local:
                    return
            current = self._db.data_version()
            if current != version:
                version = current
                with self._db.read("poll for work") as conn:
                    if self._any_ready(conn, queues):
                        return
                    next_due = self._next_due(conn, queues)

    def _any_ready(self, conn: SqlConnection, queues: Sequence[str]) -> bool:
        return any(conn.execute(self._q["any_ready"], {"queue": q}).fetchone()[0] for q in queues)
