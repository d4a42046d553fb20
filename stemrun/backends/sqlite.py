"""The embedded SQLite result backend: status records and heartbeats in one file.

Fenced writes read, apply `apply_transition` and write back inside one BEGIN IMMEDIATE
transaction, so two processes racing on a record serialise and the first terminal result wins.
The SQL lives in `sqlite_queries.sql`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stemrun.backends.base import (
    CHORD_TTL_S,
    Backend,
    StatusRecord,
    Transition,
    apply_transition,
    check_chord_member,
)
from stemrun.backends.codec import decode_record, encode_heartbeat, encode_record
from stemrun.clock import Clock, SystemClock
from stemrun.errors import BackendError
from stemrun.sqlite_db import SqliteDatabase, load_queries
from stemrun.url import mask_url


class SqliteBackend(Backend):
    """Result backend on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises BackendError naming the URL when the file cannot be opened or a query fails.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "stem",
        base_dir: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        try:
            queries = load_queries("stemrun.backends", "sqlite_queries.sql", namespace)
        except ValueError as exc:
            raise BackendError(f"result backend {mask_url(url)}: {exc}") from exc
        self._db = SqliteDatabase(
            url, role="result backend", error=BackendError, queries=queries, base_dir=base_dir
        )
        self._q = queries

    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records whose id is absent (or expired), in one transaction.

        Raises BackendError on store failure or a value that is not JSON.
        """
        rows = [_row(r) for r in records]
        if not rows:
            return []
        with self._db.write("create status records") as conn:
            now = self.clock.now()
            ids = json.dumps([row["id"] for row in rows])
            taken = {r[0] for r in conn.execute(self._q["live_ids"], {"ids": ids, "now": now})}
            inserted = []
            for row in rows:
                inserted.append(row["id"] not in taken)
                taken.add(row["id"])  # a repeated id within the batch is not new the second time
            fresh = [{**row, "now": now} for row, new in zip(rows, inserted, strict=True) if new]
            # One executemany instead of a statement per row: the batch is one round trip.
            conn.executemany(self._q["create"], fresh)
            return inserted

    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired; raises BackendError."""
        with self._db.read("read a status record") as conn:
            row = conn.execute(self._q["get"], {"id": task_id, "now": self.clock.now()}).fetchone()
        return None if row is None else decode_record(row[0])

    def _current(self, conn: sqlite3.Connection, task_id: str, now: float) -> StatusRecord | None:
        row = conn.execute(self._q["get"], {"id": task_id, "now": now}).fetchone()
        return None if row is None else decode_record(row[0])

    def transition(self, changes: Sequence[Transition]) -> list[bool]:
        """Apply fenced transitions in one transaction; raises BackendError."""
        if not changes:
            return []
        result: list[bool] = []
        with self._db.write("update status records") as conn:
            now = self.clock.now()
            for change in changes:
                record = self._current(conn, change.task_id, now)
                updated = None if record is None else apply_transition(record, change)
                if updated is not None:
                    conn.execute(self._q["update"], _row(updated))
                result.append(updated is not None)
        return result

    def replace(self, record: StatusRecord) -> None:
        """Overwrite a record unconditionally; raises BackendError."""
        row = _row(record)
        with self._db.write("replace a status record") as conn:
            conn.execute(self._q["upsert"], row)

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove records; raises BackendError."""
        with self._db.write("delete status records") as conn:
            conn.executemany(self._q["delete"], [(task_id,) for task_id in task_ids])

    def set_progress(
        self, task_id: str, attempt: int, fraction: float | None, meta: Mapping[str, Any]
    ) -> bool:
        """Record progress unless fenced out (terminal or older attempt); raises BackendError."""
        with self._db.write("record progress") as conn:
            record = self._current(conn, task_id, self.clock.now())
            if record is None:
                return False
            change = Transition(
                task_id=task_id,
                attempt=attempt,
                state=record.state,
                changes={"progress": fraction, "progress_meta": dict(meta)},
            )
            updated = apply_transition(record, change)
            if updated is not None:
                conn.execute(self._q["update"], _row(updated))
            return updated is not None

    def put_worker(self, worker_id: str, info: Mapping[str, Any], ttl_s: float) -> None:
        """Publish a heartbeat expiring after `ttl_s`; raises BackendError."""
        now = self.clock.now()
        params = {
            "id": worker_id,
            "info": encode_heartbeat(worker_id, info, now),
            "expires_at": now + ttl_s,
        }
        with self._db.write("publish a worker heartbeat") as conn:
            conn.execute(self._q["put_worker"], params)

    def workers(self) -> list[dict[str, Any]]:
        """Heartbeats of workers seen within their TTL, ordered by id; raises BackendError."""
        with self._db.read("list workers") as conn:
            rows = conn.execute(self._q["workers"], {"now": self.clock.now()}).fetchall()
        return [json.loads(row[0]) for row in rows]

    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat; raises BackendError."""
        with self._db.write("remove a worker heartbeat") as conn:
            conn.execute(self._q["remove_worker"], {"id": worker_id})

    def purge_expired(self, now: float) -> int:
        """Delete records (and heartbeats) past their expiry; returns how many records.

        Raises BackendError.
        """
        with self._db.write("purge expired records") as conn:
            conn.execute(self._q["purge_expired_workers"], {"now": now})
            conn.execute(self._q["purge_expired_chords"], {"now": now})
            return conn.execute(self._q["purge_expired"], {"now": now}).rowcount

    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record a chord member's result; the ordered results once complete (see Backend).

        One BEGIN IMMEDIATE transaction inserts and counts, so concurrent members serialise and
        exactly one first-time add sees the chord complete. Raises ValueError (bad index, result
        not JSON) or BackendError.
        """
        check_chord_member(index, size)
        params = {
            "chord_id": chord_id,
            "idx": index,
            "result": json.dumps(result, allow_nan=False),
            "expires_at": self.clock.now() + ttl_s,
        }
        with self._db.write("record a chord member") as conn:
            conn.execute(self._q["chord_add"], params)
            (count,) = conn.execute(self._q["chord_count"], params).fetchone()
            if count < size:
                return None
            rows = conn.execute(self._q["chord_results"], params).fetchall()
        return [json.loads(row[0]) for row in rows]

    def ping(self) -> None:
        """Run a trivial query; raises BackendError."""
        with self._db.read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection; raises BackendError."""
        self._db.close()


def _row(record: StatusRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "state": str(record.state),
        "attempt": record.attempt,
        "expires_at": record.expires_at,
        "data": encode_record(record),
    }
