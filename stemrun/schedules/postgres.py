"""The Postgres schedule store: versioned entries and the beat leader lease in one schema.

Every write is one statement fenced in SQL, so beats on many machines racing on one store never
overwrite each other. The lease is a row with an owner and an expiry computed from the beat's
clock, not a session advisory lock: it outlives a dropped connection for exactly its TTL. The SQL
lives in `postgres_queries.sql`; the store logic is `SqlScheduleStore`'s.
"""

from __future__ import annotations

from stemrun.postgres_db import PostgresDatabase
from stemrun.schedules.sql import SqlScheduleStore


class PostgresScheduleStore(SqlScheduleStore[PostgresDatabase]):
    """Schedule store on Postgres; tables `{namespace}_schedules` and `{namespace}_leases`.

    Tables are created when missing, in the connection's schema. Raises ScheduleStoreError
    naming the masked URL when the server cannot be reached or a query fails.
    """

    def _open_database(self) -> PostgresDatabase:
        return PostgresDatabase(self, "stemrun.schedules", "postgres_queries.sql")
