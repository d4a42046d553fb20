"""The SQLite schedule store: entries and the beat lease in the embedded database file.

Every write is one statement fenced in SQL (the version for entries, owner/expiry for the lease)
inside BEGIN IMMEDIATE, so beats in several processes on one machine serialise on the file. The
SQL lives in `sqlite_queries.sql`.
"""

from __future__ import annotations

from typing import Any, Unpack

from stemrun.errors import ScheduleStoreError
from stemrun.schedules.store import (
    BEAT_LEASE,
    ScheduleEntry,
    ScheduleStore,
    decode_entry,
    encode_entry,
)
from stemrun.sqlite_db import SqliteDatabase, load_queries
from stemrun.store_base import StoreOptions
from stemrun.url import mask_url


class SqliteScheduleStore(ScheduleStore):
    """Schedule store on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises ScheduleStoreError naming the URL when the file cannot be opened or a query fails.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        try:
            queries = load_queries("stemrun.schedules", "sqlite_queries.sql", self.namespace)
        except ValueError as exc:
            raise ScheduleStoreError(f"schedule store {mask_url(url)}: {exc}") from exc
        self._db = SqliteDatabase(
            url,
            role="schedule store",
            error=ScheduleStoreError,
            queries=queries,
            base_dir=self.base_dir,
        )
        self._q = queries

    def get(self, name: str) -> ScheduleEntry | None:
        """The entry, or None."""
        with self._db.read("read a schedule entry") as conn:
            row = conn.execute(self._q["get"], {"name": name}).fetchone()
        return None if row is None else decode_entry(row[0])

    def entries(self) -> list[ScheduleEntry]:
        """Every entry, ordered by name."""
        with self._db.read("list schedule entries") as conn:
            rows = conn.execute(self._q["list"]).fetchall()
        return [decode_entry(row[0]) for row in rows]

    def due(self, now: float, limit: int = 100) -> list[ScheduleEntry]:
        """Enabled entries with `next_run_at <= now`, earliest first."""
        with self._db.read("find due schedule entries") as conn:
            rows = conn.execute(self._q["due"], {"now": now, "limit": limit}).fetchall()
        return [decode_entry(row[0]) for row in rows]

    def next_due_at(self) -> float | None:
        """The earliest `next_run_at` of an enabled entry."""
        with self._db.read("find the next due schedule entry") as conn:
            row = conn.execute(self._q["next_due_at"]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def add(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Insert if the name is absent; returns the stored entry (version 1)."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": 1})
        params = _row(stored)
        with self._db.write("add a schedule entry") as conn:
            added = conn.execute(self._q["add"], params).rowcount == 1
        return stored if added else None

    def update(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Replace at `entry.version`; returns the stored entry (version + 1) or None."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": entry.version + 1})
        params = _row(stored)
        with self._db.write("update a schedule entry") as conn:
            updated = conn.execute(self._q["update"], params).rowcount == 1
        return stored if updated else None

    def remove(self, name: str, version: int | None = None) -> bool:
        """Delete the entry (only at `version`, when given)."""
        query = self._q["remove"] if version is None else self._q["remove_at"]
        with self._db.write("remove a schedule entry") as conn:
            return bool(conn.execute(query, {"name": name, "version": version}).rowcount == 1)

    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        """Take the lease if free, expired or already ours."""
        with self._db.write("acquire the beat lease") as conn:
            cursor = conn.execute(self._q["acquire_lease"], self._lease_params(owner, ttl_s))
            return bool(cursor.rowcount == 1)

    def renew_lease(self, owner: str, ttl_s: float) -> bool:
        """Extend the lease only while `owner` holds it unexpired."""
        with self._db.write("renew the beat lease") as conn:
            cursor = conn.execute(self._q["renew_lease"], self._lease_params(owner, ttl_s))
            return bool(cursor.rowcount == 1)

    def release_lease(self, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        with self._db.write("release the beat lease") as conn:
            conn.execute(self._q["release_lease"], {"lease": BEAT_LEASE, "owner": owner})

    def lease_owner(self) -> str | None:
        """Who holds an unexpired lease."""
        params = {"lease": BEAT_LEASE, "now": self.clock.now()}
        with self._db.read("read the beat lease") as conn:
            row = conn.execute(self._q["lease_owner"], params).fetchone()
        return None if row is None else str(row[0])

    def ping(self) -> None:
        """Run a trivial query."""
        with self._db.read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _lease_params(self, owner: str, ttl_s: float) -> dict[str, Any]:
        now = self.clock.now()
        return {"lease": BEAT_LEASE, "owner": owner, "now": now, "expires_at": now + ttl_s}


def _row(entry: ScheduleEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "enabled": int(entry.enabled),
        "next_run_at": entry.next_run_at,
        "version": entry.version,
        "data": encode_entry(entry),
    }
