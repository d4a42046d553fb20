"""The Postgres broker: messages leased with `FOR UPDATE SKIP LOCKED`, woken by LISTEN/NOTIFY.

Each lease is one statement per queue inside one transaction; racing consumers skip each other's
locked rows, so no message is handed to two of them. A publish notifies `{ns}_work` with the queue
name at commit; a blocked fetch listens on its own connection and looks again when its queue is
named or a delayed message falls due. The SQL lives in `postgres_broker_queries.sql`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Unpack

import psycopg

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
from stemrun.errors import BrokerError, BrokerUnavailable
from stemrun.postgres_db import PostgresDatabase, load_queries
from stemrun.store_base import StoreOptions
from stemrun.url import mask_url

#: The longest a blocked fetch waits between looks at its clock (a delayed message may fall due
#: without any notification).
WAIT_STEP_S = 0.05

_READY, _DELAYED, _LEASED = 0, 1, 2
_Conn = psycopg.Connection[Any]


class PostgresBroker(Broker, DeadLetterAdmin, QueueMonitor):
    """Broker on Postgres; tables `{namespace}_messages` and `{namespace}_dead_letters`.

    Raises BrokerUnavailable when the server cannot be reached and BrokerError when a query
    fails, both naming the masked URL.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        try:
            self._q = load_queries("stemrun.brokers", "postgres_broker_queries.sql", self.namespace)
        except ValueError as exc:
            raise BrokerError(f"broker {mask_url(url)}: {exc}") from exc
        self._db = PostgresDatabase(
            url,
            role="broker",
            error=BrokerError,
            unavailable=BrokerUnavailable,
            queries=self._q,
            tls=self.tls,
        )
        self._listen_lock = threading.Lock()
        self._listener: _Conn | None = None
        self._listener_pid = os.getpid()

    def _state_of(self, eta: float | None, now: float) -> tuple[int, float | None]:
        if eta is not None and eta > now:
            return _DELAYED, eta
        return _READY, None

    def publish(self, messages: Sequence[Message]) -> None:
        """Insert all messages in one transaction and wake their queues' consumers.

        Raises BrokerError.
        """
        if not messages:
            return
        now = self.clock.now()
        states = [self._state_of(m.eta, now) for m in messages]
        params: dict[str, list[Any]] = {
            "ids": [m.id for m in messages],
            "queues": [m.queue for m in messages],
            "priorities": [m.priority for m in messages],
            "bodies": [m.body for m in messages],
            "states": [state for state, _ in states],
            "due_ats": [due_at for _, due_at in states],
        }
        with self._db.transaction("publish") as conn:
            conn.execute(self._q["publish"], params)
            conn.execute(self._q["notify"], {"queues": sorted(set(params["queues"]))})

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
        if block_s > 0:
            self._listening()  # before looking, so a publish right after the look still wakes us
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
                rows = conn.execute(self._q["lease"], params).fetchall()
                # RETURNING gives no order guarantee; restore priority, then FIFO.
                rows.sort(key=lambda row: (-row[4], row[0]))
                found.extend(delivery_from_row(row) for row in rows)
            next_due = None if found else self._next_due(conn, queues)
        return found, next_due

    def _next_due(self, conn: _Conn, queues: Sequence[str]) -> float | None:
        row = conn.execute(self._q["next_due"], {"queues": list(queues)}).fetchone()
        return None if row is None or row[0] is None else float(row[0])

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
        state, due_at = self._state_of(eta, self.clock.now())
        params = {
            "id": delivery.id,
            "receipt": delivery.receipt,
            "body": body,
            "state": state,
            "due_at": due_at,
        }
        with self._db.transaction("requeue") as conn:
            done = conn.execute(self._q["requeue"], params).rowcount > 0
            if done:
                conn.execute(self._q["notify"], {"queues": [delivery.queue]})
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
        with self._db.autocommit("list dead letters") as conn:
            rows = conn.execute(self._q[name], {"queue": queue, "limit": limit}).fetchall()
        return [dead_letter_from_row(row) for row in rows]

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        """One dead letter by task id; raises BrokerError."""
        with self._db.autocommit("read a dead letter") as conn:
            row = conn.execute(self._q["dead_letter_get"], {"id": task_id}).fetchone()
        return None if row is None else dead_letter_from_row(row)

    def replay(self, task_id: str, body: bytes, eta: float | None) -> bool:
        """Swap a dead letter for a new message atomically; False if absent; raises BrokerError."""
        state, due_at = self._state_of(eta, self.clock.now())
        with self._db.transaction("replay") as conn:
            rows = conn.execute(self._q["take_dead_letter"], {"id": task_id}).fetchall()
            if not rows:
                return False
            queue, priority = rows[0]
            params = {
                "ids": [task_id],
                "queues": [queue],
                "priorities": [priority],
                "bodies": [body],
                "states": [state],
                "due_ats": [due_at],
            }
            conn.execute(self._q["publish"], params)
            conn.execute(self._q["notify"], {"queues": [queue]})
        return True

    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters of one queue or all; raises BrokerError."""
        name = "purge_dead_letters_all" if queue is None else "purge_dead_letters_of_queue"
        with self._db.autocommit("purge dead letters") as conn:
            return conn.execute(self._q[name], {"queue": queue}).rowcount

    def delete_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete the dead letters with these ids in one statement; raises BrokerError."""
        if not task_ids:
            return 0
        with self._db.autocommit("delete dead letters") as conn:
            return conn.execute(self._q["drop_dead_letters"], {"ids": list(task_ids)}).rowcount

    def stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Pending, delayed, in-flight and dead counts per queue; raises BrokerError."""
        now = self.clock.now()
        result: dict[str, QueueStats] = {}
        with self._db.autocommit("queue stats") as conn:
            for queue in queues:
                row = conn.execute(self._q["queue_stats"], {"queue": queue, "now": now}).fetchone()
                pending, delayed, in_flight, dead = row if row is not None else (0, 0, 0, 0)
                result[queue] = QueueStats(
                    pending=pending, delayed=delayed, in_flight=in_flight, dead=dead
                )
        return result

    def ping(self) -> None:
        """Run a trivial query; raises BrokerUnavailable or BrokerError."""
        with self._db.autocommit("ping") as conn:
            conn.execute(self._q["ping"]).fetchone()

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
        self._db.close()
