"""The Postgres result backend: status records, heartbeats and flow control in one schema.

Fenced writes lock the batch's live rows (`SELECT ... ORDER BY id FOR UPDATE`), so racing
workers serialise on the row locks; a transaction that still loses a deadlock or serialisation
race is run again. The SQL lives in `postgres_queries.sql`; the backend logic is `SqlBackend`'s,
this class adds the batch insert and the advisory locks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stemrun.backends.record import StatusRecord
from stemrun.backends.sql import SqlBackend, record_row
from stemrun.postgres_db import PostgresDatabase, columns
from stemrun.sql_db import SqlConnection


class PostgresBackend(SqlBackend[PostgresDatabase]):
    """Result backend on Postgres (`postgresql://user:pass@host:port/db?options=...`).

    Tables `{namespace}_status` and `{namespace}_workers` are created when missing, in the
    connection's schema. Raises BackendUnavailable when the server cannot be reached and
    BackendError when a query fails, both naming the masked URL.
    """

    def _open_database(self) -> PostgresDatabase:
        return PostgresDatabase(self, "stemrun.backends", "postgres_queries.sql")

    @property
    def params(self) -> dict[str, Any]:
        """The libpq connection parameters in use (URL, tls section, connect timeout)."""
        return self._db.params

    def _serialise(self, conn: SqlConnection, kind: str, keys: Iterable[str]) -> None:
        # Transaction-scoped advisory locks, taken in sorted order so two transactions wanting
        # several keys queue up instead of deadlocking.
        for key in sorted(keys):
            conn.execute(self._q["lock"], {"lock": f"{self.namespace}_{kind}:{key}"})

    def create_in(self, conn: SqlConnection, records: Sequence[StatusRecord]) -> list[bool]:
        rows: dict[str, StatusRecord] = {}
        for record in records:
            rows.setdefault(record.id, record)  # a repeated id is not new the second time
        # Sorted so concurrent batches lock the same ids in the same order.
        batch = columns([record_row(rows[task_id]) for task_id in sorted(rows)])
        params = {**batch, "now": self.clock.now()}
        written = {row[0] for row in conn.execute(self._q["create"], params)}
        result = []
        for record in records:
            result.append(record.id in written)
            written.discard(record.id)
        return result
