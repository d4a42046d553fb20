"""What the SQLite and Postgres brokers share: the broker written once over `SqlDatabase`.

Both keep messages in `{ns}_messages` (a row is ready, delayed or leased; see either store's
queries file) and dead letters in `{ns}_dead_letters`, with the same named queries. A subclass
opens its database and supplies what its engine does differently: finding the next due time,
waking waiting consumers and waiting for work.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

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
from stemrun.sql_db import DbT, SqlConnection, SqlStore

_READY, _DELAYED = 0, 1


class SqlBroker(SqlStore[DbT], Broker, DeadLetterAdmin, QueueMonitor):
    """A broker on a SQL database; every method raises BrokerError (BrokerUnavailable when the
    server cannot be reached), naming the masked URL."""

    @abstractmethod
    def _next_due(self, conn: SqlConnection, queues: Sequence[str]) -> float | None:
        """When the first delayed message or lease of `queues` falls due (None: none does)."""

    @abstractmethod
    def _wake(self, conn: SqlConnection, queues: Sequence[str]) -> None:
        """Tell consumers waiting on `queues` about work written in the current transaction."""

    @abstractmethod
    def _wait_for_work(
        self, queues: Sequence[str], deadline: float, next_due: float | None
    ) -> None:
        """Return once work may be there (woken, or `next_due` passed) or `deadline` passes."""

    def _watch(self) -> None:
        """Start noticing wake-ups before a blocking fetch first looks (none by default)."""

    def publish(self, messages: Sequence[Message]) -> None:
        """Insert all messages in one transaction and wake their queues' consumers.

        Raises BrokerError.
        """
        if messages:
            with self._db.transaction("publish") as conn:
                self.publish_in(conn, messages)

    def publish_in(self, conn: SqlConnection, messages: Sequence[Message]) -> None:
        """Publish within the caller's transaction on this database (record and publish as one
        write when the result backend shares it)."""
        now = self.clock.now()
        rows = [_message(m.id, m.queue, m.priority, m.body, _due(m.eta, now)) for m in messages]
        self._db.batch(conn, self._q["publish"], rows)
        self._wake(conn, sorted({m.queue for m in messages}))

    def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        consumer: str,
        lease_s: float,
        block_s: float = 0.0,
        ack: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Lease up to `limit` due messages (`ack` first), waiting up to `block_s`; raises
        BrokerError."""
        if ack:
            self.ack(ack)
        deadline = time.monotonic() + block_s
        if block_s > 0:
            self._watch()  # before looking, so a publish right after the look still wakes us
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
        with self._db.transaction("fetch") as conn:
            for queue in queues:
                if len(found) >= limit:
                    break
                params = {
                    "queue": queue,
                    "now": now,
                    "limit": limit - len(found),
                    "lease_until": now + lease_s,
                }
                rows = self._lease_queue(conn, params)
                # RETURNING gives no order guarantee; restore priority, then FIFO.
                rows.sort(key=lambda row: (-row[4], row[0]))
                found.extend(delivery_from_row(row) for row in rows)
            next_due = None if found else self._next_due(conn, queues)
        return found, next_due

    def _lease_queue(self, conn: SqlConnection, params: dict[str, Any]) -> list[Any]:
        """Lease the due messages of one queue: the rows of the `lease` query."""
        return conn.execute(self._q["lease"], params).fetchall()

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
        with self._db.transaction(what) as conn:
            return [conn.execute(sql, p).rowcount > 0 for p in params]

    def requeue(self, delivery: Delivery, body: bytes, eta: float | None) -> bool:
        """Replace a leased message by `body` due at `eta`, atomically; raises BrokerError."""
        key = {"id": delivery.id, "receipt": delivery.receipt}
        params = {**key, "body": body, **_due(eta, self.clock.now())}
        with self._db.transaction("requeue") as conn:
            done = conn.execute(self._q["requeue"], params).rowcount > 0
            if done:
                self._wake(conn, [delivery.queue])
        return done

    def dead_letter(self, delivery: Delivery, entry: DeadLetter) -> bool:
        """Move a leased message to the dead letters in one transaction; raises BrokerError."""
        key = {"id": delivery.id, "receipt": delivery.receipt}
        try:
            error = None if entry.error is None else json.dumps(entry.error)
        except (TypeError, ValueError) as exc:
            raise self._db.fail(f"dead letter {entry.id}: error is not JSON", exc) from exc
        with self._db.transaction("dead-letter") as conn:
            rows = conn.execute(self._q["take_leased"], key).fetchall()
            if not rows:
                return False
            # A later dead letter of the same id replaces the earlier one, as the newest.
            conn.execute(self._q["drop_dead_letter"], {"id": entry.id})
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
        now = self.clock.now()
        with self._db.transaction("replay") as conn:
            rows = conn.execute(self._q["take_dead_letter"], {"id": task_id}).fetchall()
            if not rows:
                return False
            queue, priority = rows[0]
            row = _message(task_id, queue, priority, body, _due(eta, now))
            self._db.batch(conn, self._q["publish"], [row])
            self._wake(conn, [queue])
        return True

    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters of one queue or all; raises BrokerError."""
        name = "purge_dead_letters_all" if queue is None else "purge_dead_letters_of_queue"
        with self._db.write("purge dead letters") as conn:
            return conn.execute(self._q[name], {"queue": queue}).rowcount

    def delete_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete the dead letters with these ids in one statement; raises BrokerError."""
        if not task_ids:
            return 0
        params = {"ids": self._db.array(dict.fromkeys(task_ids))}
        with self._db.write("delete dead letters") as conn:
            return conn.execute(self._q["drop_dead_letters"], params).rowcount

    def stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Pending, delayed, in-flight and dead counts per queue; raises BrokerError."""
        now = self.clock.now()
        result: dict[str, QueueStats] = {}
        with self._db.read("queue stats") as conn:
            for queue in queues:
                row = conn.execute(self._q["queue_stats"], {"queue": queue, "now": now}).fetchone()
                pending, delayed, in_flight, dead = row if row is not None else (0, 0, 0, 0)
                result[queue] = QueueStats(
                    pending=pending, delayed=delayed, in_flight=in_flight, dead=dead
                )
        return result


def _due(eta: float | None, now: float) -> dict[str, Any]:
    """The state and due time of a message due at `eta`: delayed until then, else ready."""
    if eta is not None and eta > now:
        return {"state": _DELAYED, "due_at": eta}
    return {"state": _READY, "due_at": None}


def _message(
    task_id: str, queue: str, priority: int, body: bytes, due: dict[str, Any]
) -> dict[str, Any]:
    """The named parameters of the `publish` query for one message."""
    return {"id": task_id, "queue": queue, "priority": priority, "body": body, **due}
