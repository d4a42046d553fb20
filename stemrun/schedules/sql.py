"""What the SQLite and Postgres schedule stores share: the store written once over `SqlDatabase`.

Entries live in `{ns}_schedules` (the entry whole as JSON in `data`, with `enabled`,
`next_run_at` and `version` copied into columns) and the beat lease in `{ns}_leases`. Every write
is one statement fenced in SQL (the version for entries, owner and expiry for the lease), so
beats racing on one store never overwrite each other. A subclass only opens its database.
"""

from __future__ import annotations

from typing import Any

from stemrun.schedules.store import (
    BEAT_LEASE,
    ScheduleEntry,
    ScheduleStore,
    decode_entry,
    encode_entry,
)
from stemrun.sql_db import DbT, SqlStore


class SqlScheduleStore(SqlStore[DbT], ScheduleStore):
    """A schedule store on a SQL database; every method raises ScheduleStoreError naming the
    masked URL."""

    def _rows(self, what: str, query: str, params: dict[str, Any]) -> list[Any]:
        with self._db.read(what) as conn:
            return conn.execute(self._q[query], params).fetchall()

    def _count(self, what: str, query: str, params: dict[str, Any]) -> int:
        with self._db.write(what) as conn:
            return conn.execute(self._q[query], params).rowcount

    def get(self, name: str) -> ScheduleEntry | None:
        """The entry, or None."""
        rows = self._rows("read a schedule entry", "get", {"name": name})
        return decode_entry(rows[0][0]) if rows else None

    def entries(self) -> list[ScheduleEntry]:
        """Every entry, ordered by name."""
        return [decode_entry(row[0]) for row in self._rows("list schedule entries", "list", {})]

    def due(self, now: float, limit: int = 100) -> list[ScheduleEntry]:
        """Enabled entries with `next_run_at <= now`, earliest first."""
        rows = self._rows("find due schedule entries", "due", {"now": now, "limit": limit})
        return [decode_entry(row[0]) for row in rows]

    def next_due_at(self) -> float | None:
        """The earliest `next_run_at` of an enabled entry."""
        rows = self._rows("find the next due schedule entry", "next_due_at", {})
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def add(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Insert if the name is absent; returns the stored entry (version 1)."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": 1})
        added = self._count("add a schedule entry", "add", _row(stored)) == 1
        return stored if added else None

    def update(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Replace at `entry.version`; returns the stored entry (version + 1) or None."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": entry.version + 1})
        updated = self._count("update a schedule entry", "update", _row(stored)) == 1
        return stored if updated else None

    def remove(self, name: str, version: int | None = None) -> bool:
        """Delete the entry (only at `version`, when given)."""
        query = "remove" if version is None else "remove_at"
        params = {"name": name, "version": version}
        return self._count("remove a schedule entry", query, params) == 1

    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        """Take the lease if free, expired or already ours."""
        params = self._lease_params(owner, ttl_s)
        return self._count("acquire the beat lease", "acquire_lease", params) == 1

    def renew_lease(self, owner: str, ttl_s: float) -> bool:
        """Extend the lease only while `owner` holds it unexpired."""
        params = self._lease_params(owner, ttl_s)
        return self._count("renew the beat lease", "renew_lease", params) == 1

    def release_lease(self, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        params = {"lease": BEAT_LEASE, "owner": owner}
        self._count("release the beat lease", "release_lease", params)

    def lease_owner(self) -> str | None:
        """Who holds an unexpired lease."""
        params = {"lease": BEAT_LEASE, "now": self.clock.now()}
        rows = self._rows("read the beat lease", "lease_owner", params)
        return str(rows[0][0]) if rows else None

    def _lease_params(self, owner: str, ttl_s: float) -> dict[str, Any]:
        now = self.clock.now()
        return {"lease": BEAT_LEASE, "owner": owner, "now": now, "expires_at": now + ttl_s}


def _row(entry: ScheduleEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "enabled": entry.enabled,
        "next_run_at": entry.next_run_at,
        "version": entry.version,
        "data": encode_entry(entry),
    }
