"""The embedded SQLite result backend: status records and heartbeats in one file.

Every write is one BEGIN IMMEDIATE transaction, so two processes racing on a record serialise
and the first terminal result wins. The SQL lives in `sqlite_queries.sql`; the backend logic is
`SqlBackend`'s, this class adds how SQLite inserts a batch of new records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stemrun.backends.record import StatusRecord
from stemrun.backends.sql import SqlBackend, record_row
from stemrun.sql_db import SqlConnection
from stemrun.sqlite_db import SqliteDatabase


class SqliteBackend(SqlBackend[SqliteDatabase]):
    """Result backend on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises BackendError naming the URL when the file cannot be opened or a query fails.
    """

    def _open_database(self) -> SqliteDatabase:
        return SqliteDatabase(self, "stemrun.backends", "sqlite_queries.sql")

    def _serialise(self, conn: SqlConnection, kind: str, keys: Iterable[str]) -> None:
        # BEGIN IMMEDIATE already makes every writer of the file take turns.
        return

    def create_in(self, conn: SqlConnection, records: Sequence[StatusRecord]) -> list[bool]:
        rows = [record_row(r) for r in records]
        now = self.clock.now()
        ids = self._db.array(row["id"] for row in rows)
        taken = {r[0] for r in conn.execute(self._q["live_ids"], {"ids": ids, "now": now})}
        inserted = []
        for row in rows:
            inserted.append(row["id"] not in taken)
            taken.add(row["id"])  # a repeated id within the batch is not new the second time
        fresh = [{**row, "now": now} for row, new in zip(rows, inserted, strict=True) if new]
        self._db.batch(conn, self._q["create"], fresh)
        return inserted
