"""The Postgres broker: messages leased with `FOR UPDATE SKIP LOCKED`, woken by LISTEN/NOTIFY.

Each lease is one statement per queue inside one transaction; racing consumers skip each other's
locked rows, so no message is handed to two of them. A publish notifies `{ns}_work` with the queue
name at commit; a blocked fetch listens on its own connection and looks again when its queue is
named or a delayed message falls due. The SQL lives in `postgres_broker_queries.sql`; the broker
logic is `SqlBroker`'s, this class adds the listening.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Unpack

import psycopg

from stemrun.brokers.sql import SqlBroker
from stemrun.errors import BrokerUnavailable
from stemrun.postgres_db import PostgresDatabase
from stemrun.sql_db import SqlConnection
from stemrun.store_base import StoreOptions
from stemrun.url import mask_url

#: The longest a blocked fetch waits between looks at its clock (a delayed message may fall due
#: without any notification).
WAIT_STEP_S = 0.05

_Conn = psycopg.Connection[Any]


class PostgresBroker(SqlBroker[PostgresDatabase]):
    """Broker on Postgres; tables `{namespace}_messages` and `{namespace}_dead_letters`.

    Raises BrokerUnavailable when the server cannot be reached and BrokerError when a query
    fails, both naming the masked URL.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._listen_lock = threading.Lock()
        self._listener: _Conn | None = None
        self._listener_pid = os.getpid()

    def _open_database(self) -> PostgresDatabase:
        return PostgresDatabase(self, "stemrun.brokers", "postgres_broker_queries.sql")

    def _wake(self, conn: SqlConnection, queues: Sequence[str]) -> None:
        # Postgres delivers the notifications at commit, to every listening process.
        conn.execute(self._q["notify"], {"queues": list(queues)})

    def _next_due(self, conn: SqlConnection, queues: Sequence[str]) -> float | None:
        row = conn.execute(self._q["next_due"], {"queues": list(queues)}).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _watch(self) -> None:
        self._listening()

    def _listening(self) -> _Conn:
        with self._listen_lock:
            if self._listener_pid != os.getpid():
                # A forked child must not read its parent's socket; the parent keeps it.
                self._listener, self._listener_pid = None, os.getpid()
            if self._listener is None or self._listener.closed:
                conn = self._db.open_connection()
                try:
                    conn.execute(self._q["listen"])
                except psycopg.Error as exc:
                    conn.close()
                    raise self._db.fail("listen for new messages", exc) from exc
                self._listener = conn
            return self._listener

    def _wait_for_work(
        self, queues: Sequence[str], deadline: float, next_due: float | None
    ) -> None:
        """Wait until one of `queues` is notified, `next_due` passes or `deadline` does."""
        conn = self._listening()
        wanted = set(queues)
        while (remaining := deadline - time.monotonic()) > 0:
            if next_due is not None and self.clock.now() >= next_due:
                return
            try:
                with self._listen_lock:
                    notes = list(conn.notifies(timeout=min(remaining, WAIT_STEP_S)))
            except psycopg.Error as exc:
                self._close_listener()
                raise BrokerUnavailable(
                    f"broker {mask_url(self.url)}: lost the connection while waiting ({exc})"
                ) from exc
            if any(note.payload in wanted for note in notes):
                return

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and self._listener_pid == os.getpid():
            try:
                listener.close()
            except psycopg.Error:
                # Already broken; closing is best effort.
                pass

    def close(self) -> None:
        """Close both connections."""
        with self._listen_lock:
            self._close_listener()
        super().close()
