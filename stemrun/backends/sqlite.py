"""The embedded SQLite result backend: status records and heartbeats in one file.

Fenced writes read, apply `apply_transition` and write back inside one BEGIN IMMEDIATE
transaction, so two processes racing on a record serialise and the first terminal result wins.
The SQL lives in `sqlite_queries.sql`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from stemrun.backends.base import (
    CHORD_TTL_S,
    Chords,
    FlowControl,
    RecordListing,
    ResultBackend,
    Telemetry,
    check_chord_member,
    next_slot,
)
from stemrun.backends.codec import decode_heartbeats, decode_record, encode_heartbeat, encode_record
from stemrun.backends.record import StatusRecord, Transition, apply_transition, cancel_change
from stemrun.errors import BackendError
from stemrun.sqlite_db import SqliteDatabase, load_queries
from stemrun.store_base import StoreOptions
from stemrun.telemetry import Heartbeat
from stemrun.url import mask_url


class SqliteBackend(ResultBackend, RecordListing, Telemetry, Chords, FlowControl):
    """Result backend on one SQLite file (`sqlite:///rel.db` or `sqlite:////abs.db`).

    Raises BackendError naming the URL when the file cannot be opened or a query fails.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        try:
            queries = load_queries("stemrun.backends", "sqlite_queries.sql", self.namespace)
        except ValueError as exc:
            raise BackendError(f"result backend {mask_url(url)}: {exc}") from exc
        self._db = SqliteDatabase(
            url, role="result backend", error=BackendError, queries=queries, base_dir=self.base_dir
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

    def list_records(
        self,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[StatusRecord]:
        """Live records matching the filters, newest first; raises BackendError."""
        params = {"state": state, "task": task, "queue": queue, "limit": limit, "offset": offset}
        with self._db.read("list status records") as conn:
            rows = conn.execute(self._q["list"], {**params, "now": self.clock.now()}).fetchall()
        return [decode_record(row[0]) for row in rows]

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

    def put_worker(self, beat: Heartbeat, ttl_s: float) -> None:
        """Keep a heartbeat until `ttl_s` passes; raises BackendError."""
        now = self.clock.now()
        params = {"id": beat.id, "info": encode_heartbeat(beat, now), "expires_at": now + ttl_s}
        with self._db.write("publish a worker heartbeat") as conn:
            conn.execute(self._q["put_worker"], params)

    def workers(self) -> list[Heartbeat]:
        """Heartbeats of workers seen within their TTL, ordered by id; raises BackendError."""
        with self._db.read("list workers") as conn:
            rows = conn.execute(self._q["workers"], {"now": self.clock.now()}).fetchall()
        return decode_heartbeats(row[0] for row in rows)

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
        """Record a chord member's result; the ordered results once complete (see ResultBackend).

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

    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters in one transaction (`value = value + ?`); raises BackendError."""
        rows = [{"name": name, "value": int(value)} for name, value in sorted(increments.items())]
        if rows:
            with self._db.write("add to counters") as conn:
                conn.executemany(self._q["incr_counter"], rows)

    def counters(self) -> dict[str, int]:
        """Every counter's total; raises BackendError."""
        with self._db.read("read counters") as conn:
            return {str(name): int(value) for name, value in conn.execute(self._q["counters"])}

    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel in one transaction (see `cancel_change`); the record after, None when unknown.

        Raises BackendError.
        """
        with self._db.write("cancel a task") as conn:
            record = self._current(conn, task_id, self.clock.now())
            updated = None if record is None else cancel_change(record, now, result_ttl_s)
            if updated is not None:
                conn.execute(self._q["update"], _row(updated))
            return updated or record

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every limiter (see ResultBackend); raises BackendError.

        One BEGIN IMMEDIATE transaction, so workers racing for a slot serialise.
        """
        with self._db.write("reserve a rate limit slot") as conn:
            conn.execute(self._q["rate_purge"], {"now": now})
            tats = {}
            for key in limits:
                row = conn.execute(self._q["rate_get"], {"key": key}).fetchone()
                tats[key] = None if row is None else float(row[0])
            slot, after = next_slot(tats, limits, now)
            conn.executemany(self._q["rate_put"], [{"key": k, "tat": t} for k, t in after.items()])
            return slot

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` unless a live claim holds it (see FlowControl); one transaction.

        Raises BackendError.
        """
        with self._db.write("claim a unique key") as conn:
            row = conn.execute(self._q["unique_holder"], {"key": key, "now": now}).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(self._q["unique_purge"], {"now": now})
            params = {"key": key, "holder": task_id, "expires_at": now + ttl_s}
            conn.execute(self._q["unique_put"], params)
            return None

    def release_unique(self, key: str, task_id: str) -> bool:
        """Drop `key` if `task_id` holds it; raises BackendError."""
        with self._db.write("release a unique key") as conn:
            params = {"key": key, "holder": task_id}
            return conn.execute(self._q["unique_release"], params).rowcount > 0

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume `queue`; raises BackendError."""
        with self._db.write("pause a queue" if paused else "resume a queue") as conn:
            params = {"queue": queue, "now": self.clock.now()}
            conn.execute(self._q["pause" if paused else "resume"], params)

    def paused_queues(self) -> set[str]:
        """The paused queues; raises BackendError."""
        with self._db.read("list paused queues") as conn:
            return {str(row[0]) for row in conn.execute(self._q["paused"])}


def _row(record: StatusRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "state": str(record.state),
        "attempt": record.attempt,
        "expires_at": record.expires_at,
        "data": encode_record(record),
    }
