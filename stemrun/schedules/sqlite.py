"""The SQLite schedule store: entries and the beat lease in the embedded database file.

Every write is one statement fenced in SQL inside BEGIN IMMEDIATE, so beats in several processes
on one machine serialise on the file. The SQL lives in `sqlite_queries.sql`; the store logic is
`SqlScheduleStore`'s.
"""

from __future__ import annotations

from stemrun.schedules.sql import SqlScheduleStore
from stemrun.sqlite_db import SqliteDatabase


class SqliteScheduleStore(SqlScheduleStore[SqliteDatabase]):
    """Schedule store on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises ScheduleStoreError naming the URL when the file cannot be opened or a query fails.
    """

    def _open_database(self) -> SqliteDatabase:
        return SqliteDatabase(self, "stemrun.schedules", "sqlite_queries.sql")
