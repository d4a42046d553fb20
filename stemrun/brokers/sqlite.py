"""The embedded SQLite broker: durable, safe across worker processes on one machine.

Every write is one BEGIN IMMEDIATE transaction, so leasing (promote, select, update) is atomic
across processes and two consumers never hold the same message. The SQL lives in
`sqlite_queries.sql`; the state model is described at the top of that file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any, Unpack

from stemrun.brokers.base import (
    Broker,
    DeadLetter,
    DeadLetterAdmin,
    Delivery,
    Message,
    QueueMonitor,
    QueueStats,
)
from stemrun.brokers.sql_rows import dead_letter_from_row, dead_letter_params, delivery_from_row
from stemrun.errors import BrokerError
from stemrun.sqlite_db import SqliteDatabase, load_queries
from stemrun.store_base import StoreOptions
from stemrun.url import mask_url

#: How often a blocking fetch looks for new work; the latency floor of an idle worker.
POLL_INTERVAL_S = 0.005

_READY, _DELAYED, _LEASED = 0, 1, 2


class SqliteBroker(Broker, DeadLetterAdmin, QueueMonitor):
    """Broker on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises BrokerError naming the URL when the file cannot be opened or a query fails.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        try:
            queries = load_queries("stemrun.brokers", "sqlite_queries.sql", self.namespace)
        except ValueError as exc:
            raise BrokerError(f"broker {mask_url(url)}: {exc}") from exc
        self._db = SqliteDatabase(
            url, role="broker", error=BrokerError, queries=queries, base_dir=self.base_dir
        )
        self._q = queries
        # Our own commits do not move PRAGMA data_version, so they wake local waiters here.
        self._local_writes = 0
        self._local_cond = threading.Condition()

    def _state_of(self, eta: float | None, now: float) -> tuple[int, float | None]:
        if eta is not None and eta > now:
            return _DELAYED, eta
        return _READY, None

    def _wrote(self) -> None:
        with self._local_cond:
            self._local_writes += 1
            self._local_cond.notify_all()

    def publish(self, messages: Sequence[Message]) -> None:
        """Insert all messages in one transaction; raises BrokerError."""
        now = self.clock.now()
        rows = [(m.id, m.queue, m.priority, m.body, *self._state_of(m.eta, now)) for m in messages]
        with self._db.write("publish") as conn:
            conn.executemany(self._q["publish"], rows)
        self._wrote()

    def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        consumer: str,
        lease_s: float,
        block_s: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to `limit` due messages, waiting up to `block_s`; raises BrokerError."""
        deadline = time.monotonic() + block_s
        while True:
            found, next_due = self._lease(queues, limit, lease_s)
            if found or limit <= 0 or time.monotonic() >= deadline:
                return found
            self._wait_for_work(queues, deadline, next_due)

    def _lease(
        self, queues: Sequence[str], limit: int, lease_s: float
    ) -> tuple[list[Delivery], float | None]:
        now = self.clock.now()
        found: list[Delivery] = []
        with self._db.write("fetch") as conn:
            for queue in queues:
                if len(found) >= limit:
                    break
                conn.execute(self._q["promote_due"], {"queue": queue, "now": now})
                params = {"queue": queue, "limit": limit - len(found), "lease_until": now + lease_s}
                rows = conn.execute(self._q["lease"], params).fetchall()
                # RETURNING gives no order guarantee; restore priority, then FIFO.
                rows.sort(key=lambda row: (-row[4], row[0]))
                found.extend(delivery_from_row(row) for row in rows)
            next_due = None if found else self._next_due(conn, queues)
        return found, next_due

    def _next_due(self, conn: sqlite3.Connection, queues: Sequence[str]) -> float | None:
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

    def _any_ready(self, conn: sqlite3.Connection, queues: Sequence[str]) -> bool:
        return any(conn.execute(self._q["any_ready"], {"queue": q}).fetchone()[0] for q in queues)

    def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[bool]:
        """Renew leases still held under their receipts; raises BrokerError."""
        until = self.clock.now() + lease_s
        params = [{"id": d.id, "receipt": d.receipt, "lease_until": until} for d in deliveries]
        return self._each("extend", params, "extend leases")

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Delete messages still held under their receipts; raises BrokerError."""
        params = [{"id": d.id, "receipt": d.receipt} for d in deliveries]
        return self._each("ack", params, "ack")

    def _each(self, name: str, params: list[dict[str, Any]], what: str) -> list[bool]:
        if not params:
            return []
        sql = self._q[name]
        with self._db.write(what) as conn:
            return [conn.execute(sql, p).rowcount > 0 for p in params]

    def requeue(self, delivery: Delivery, body: bytes, eta: float | None) -> bool:
        """Replace a leased message by `body` due at `eta`, atomically; raises BrokerError."""
        state, due_at = self._state_of(eta, self.clock.now())
        params = {
            "id": delivery.id,
            "receipt": delivery.receipt,
            "body": body,
            "state": state,
            "due_at": due_at,
        }
        with self._db.write("requeue") as conn:
            done = conn.execute(self._q["requeue"], params).rowcount > 0
        if done:
            self._wrote()
        return done

    def dead_letter(self, delivery: Delivery, entry: DeadLetter) -> bool:
        """Move a leased message to the dead letters in one transaction; raises BrokerError."""
        key = {"id": delivery.id, "receipt": delivery.receipt}
        try:
            error = None if entry.error is None else json.dumps(entry.error)
        except (TypeError, ValueError) as exc:
            raise self._db.fail(f"dead letter {entry.id}: error is not JSON", exc) from exc
        with self._db.write("dead-letter") as conn:
            rows = conn.execute(self._q["take_leased"], key).fetchall()
            if not rows:
                return False
            params = dead_letter_params(entry, priority=rows[0][0], error=error)
            conn.execute(self._q["put_dead_letter"], params)
        return True

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first; raises BrokerError."""
        name = "dead_letters_all" if queue is None else "dead_letters_of_queue"
        with self._db.read("list dead letters") as conn:
            rows = conn.execute(self._q[name], {"queue": queue, "limit": limit}).fetchall()
        return [dead_letter_from_row(row) for row in rows]

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        """One dead letter by task id; raises BrokerError."""
        with self._db.read("read a dead letter") as conn:
            row = conn.execute(self._q["dead_letter_get"], {"id": task_id}).fetchone()
        return None if row is None else dead_letter_from_row(row)

    def replay(self, task_id: str, body: bytes, eta: float | None) -> bool:
        """Swap a dead letter for a new message atomically; False if absent; raises BrokerError."""
        state, due_at = self._state_of(eta, self.clock.now())
        with self._db.write("replay") as conn:
            rows = conn.execute(self._q["take_dead_letter"], {"id": task_id}).fetchall()
            if not rows:
                return False
            queue, priority = rows[0]
            conn.execute(self._q["publish"], (task_id, queue, priority, body, state, due_at))
        self._wrote()
        return True

    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters of one queue or all; raises BrokerError."""
        name = "purge_dead_letters_all" if queue is None else "purge_dead_letters_of_queue"
        with self._db.write("purge dead letters") as conn:
            return conn.execute(self._q[name], {"queue": queue}).rowcount

    def delete_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete the dead letters with these ids in one transaction; raises BrokerError."""
        if not task_ids:
            return 0
        with self._db.write("delete dead letters") as conn:
            cursor = conn.executemany(
                self._q["drop_dead_letter"], [{"id": i} for i in set(task_ids)]
            )
            return cursor.rowcount

    def stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Pending, delayed, in-flight and dead counts per queue; raises BrokerError."""
        now = self.clock.now()
        result: dict[str, QueueStats] = {}
        with self._db.read("queue stats") as conn:
            for queue in queues:
                row = conn.execute(self._q["queue_stats"], {"queue": queue, "now": now}).fetchone()
                pending, delayed, in_flight, dead = row
                result[queue] = QueueStats(
                    pending=pending, delayed=delayed, in_flight=in_flight, dead=dead
                )
        return result

    def ping(self) -> None:
        """Run a trivial query; raises BrokerError."""
        with self._db.read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection; raises BrokerError."""
        self._db.close()
