"""The Postgres result backend: status records and heartbeats in two tables of one schema.

Fenced writes lock the batch's live rows (`SELECT ... ORDER BY id FOR UPDATE`), apply
`apply_transition` to each change in order and write the survivors back with one UPDATE, all in
one transaction, so racing workers serialise on the row locks and the first terminal result wins.
Times come from the store's clock, never from the server. The SQL lives in `postgres_queries.sql`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

import psycopg

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
from stemrun.errors import BackendError, BackendUnavailable
from stemrun.postgres_db import PostgresDatabase, load_queries
from stemrun.store_base import StoreOptions
from stemrun.telemetry import Heartbeat
from stemrun.url import mask_url


class PostgresBackend(ResultBackend, RecordListing, Telemetry, Chords, FlowControl):
    """Result backend on Postgres (`postgresql://user:pass@host:port/db?options=...`).

    Tables `{namespace}_status` and `{namespace}_workers` are created when missing, in the
    connection's schema. Raises BackendUnavailable when the server cannot be reached and
    BackendError when a query fails, both naming the masked URL.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        try:
            self._q = load_queries("stemrun.backends", "postgres_queries.sql", self.namespace)
        except ValueError as exc:
            raise BackendError(f"result backend {mask_url(url)}: {exc}") from exc
        self._db = PostgresDatabase(
            url,
            role="result backend",
            error=BackendError,
            unavailable=BackendUnavailable,
            queries=self._q,
            tls=self.tls,
        )

    @property
    def params(self) -> dict[str, Any]:
        """The libpq connection parameters in use (URL, tls section, connect timeout)."""
        return self._db.params

    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records whose id is absent (or expired) in one statement.

        Raises BackendError on store failure or a value that is not JSON.
        """
        rows: dict[str, StatusRecord] = {}
        for record in records:
            rows.setdefault(record.id, record)  # a repeated id is not new the second time
        if not rows:
            return []
        # Sorted so concurrent batches lock the same ids in the same order.
        batch = _columns(rows[task_id] for task_id in sorted(rows))

        def insert(conn: psycopg.Connection[Any]) -> set[str]:
            params = {**batch, "now": self.clock.now()}
            return {row[0] for row in conn.execute(self._q["create"], params)}

        written = self._db.run("create status records", insert)
        result = []
        for record in records:
            result.append(record.id in written)
            written.discard(record.id)
        return result

    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired; raises BackendError."""
        with self._db.autocommit("read a status record") as conn:
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
        with self._db.autocommit("list status records") as conn:
            rows = conn.execute(self._q["list"], {**params, "now": self.clock.now()}).fetchall()
        return [decode_record(row[0]) for row in rows]

    def _locked(self, conn: psycopg.Connection[Any], ids: Iterable[str]) -> dict[str, StatusRecord]:
        params = {"ids": sorted(set(ids)), "now": self.clock.now()}
        records = (decode_record(row[0]) for row in conn.execute(self._q["lock_live"], params))
        return {record.id: record for record in records}

    def _apply(self, conn: psycopg.Connection[Any], changes: Sequence[Transition]) -> list[bool]:
        current = self._locked(conn, (change.task_id for change in changes))
        dirty: set[str] = set()
        result = []
        for change in changes:
            record = current.get(change.task_id)
            updated = None if record is None else apply_transition(record, change)
            if updated is not None:
                current[change.task_id] = updated
                dirty.add(change.task_id)
            result.append(updated is not None)
        if dirty:
            conn.execute(self._q["update_many"], _columns(current[i] for i in sorted(dirty)))
        return result

    def transition(self, changes: Sequence[Transition]) -> list[bool]:
        """Apply fenced transitions in one transaction; raises BackendError."""
        if not changes:
            return []
        return self._db.run("update status records", lambda conn: self._apply(conn, changes))

    def replace(self, record: StatusRecord) -> None:
        """Overwrite a record unconditionally; raises BackendError."""
        row = {
            "id": record.id,
            "state": str(record.state),
            "attempt": record.attempt,
            "expires_at": record.expires_at,
            "data": encode_record(record),
        }
        with self._db.autocommit("replace a status record") as conn:
            conn.execute(self._q["upsert"], row)

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove records; raises BackendError."""
        with self._db.autocommit("delete status records") as conn:
            conn.execute(self._q["delete"], {"ids": list(task_ids)})

    def set_progress(
        self, task_id: str, attempt: int, fraction: float | None, meta: Mapping[str, Any]
    ) -> bool:
        """Record progress unless fenced out (terminal or older attempt); raises BackendError."""

        def record(conn: psycopg.Connection[Any]) -> bool:
            current = self._locked(conn, [task_id]).get(task_id)
            if current is None:
                return False
            change = Transition(
                task_id=task_id,
                attempt=attempt,
                state=current.state,
                changes={"progress": fraction, "progress_meta": dict(meta)},
            )
            return self._apply(conn, [change])[0]

        return self._db.run("record progress", record)

    def put_worker(self, beat: Heartbeat, ttl_s: float) -> None:
        """Keep a heartbeat until `ttl_s` passes; raises BackendError."""
        now = self.clock.now()
        params = {"id": beat.id, "info": encode_heartbeat(beat, now), "expires_at": now + ttl_s}
        with self._db.autocommit("publish a worker heartbeat") as conn:
            conn.execute(self._q["put_worker"], params)

    def workers(self) -> list[Heartbeat]:
        """Heartbeats of workers seen within their TTL, ordered by id; raises BackendError."""
        with self._db.autocommit("list workers") as conn:
            rows = conn.execute(self._q["workers"], {"now": self.clock.now()}).fetchall()
        return decode_heartbeats(row[0] for row in rows)

    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat; raises BackendError."""
        with self._db.autocommit("remove a worker heartbeat") as conn:
            conn.execute(self._q["remove_worker"], {"id": worker_id})

    def purge_expired(self, now: float) -> int:
        """Delete records (and heartbeats) past their expiry; returns how many records.

        Raises BackendError.
        """
        with self._db.transaction("purge expired records") as conn:
            conn.execute(self._q["purge_expired_workers"], {"now": now})
            conn.execute(self._q["purge_expired_chords"], {"now": now})
            return conn.execute(self._q["purge_expired"], {"now": now}).rowcount

    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record a chord member's result; the ordered results once complete (see ResultBackend).

        Raises ValueError (bad index, result not JSON) or BackendError.
        """
        check_chord_member(index, size)
        params = {
            "lock": f"{self.namespace}_chords:{chord_id}",
            "chord_id": chord_id,
            "idx": index,
            "result": json.dumps(result, allow_nan=False),
            "expires_at": self.clock.now() + ttl_s,
        }

        def add(conn: psycopg.Connection[Any]) -> list[Any] | None:
            conn.execute(self._q["chord_lock"], params)
            conn.execute(self._q["chord_add"], params)
            row = conn.execute(self._q["chord_count"], params).fetchone()
            if row is None or row[0] < size:
                return None
            return [json.loads(r[0]) for r in conn.execute(self._q["chord_results"], params)]

        return self._db.run("record a chord member", add)

    def ping(self) -> None:
        """Run a trivial query; raises BackendUnavailable or BackendError."""
        with self._db.autocommit("ping") as conn:
            conn.execute(self._q["ping"]).fetchone()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters in one statement (`value = value + ?`); raises BackendError."""
        # Sorted so concurrent batches lock the same rows in the same order (no deadlock).
        names = sorted(increments)
        if not names:
            return
        params = {"names": names, "values": [int(increments[name]) for name in names]}
        with self._db.autocommit("add to counters") as conn:
            conn.execute(self._q["incr_counters"], params)

    def counters(self) -> dict[str, int]:
        """Every counter's total; raises BackendError."""
        with self._db.autocommit("read counters") as conn:
            return {str(name): int(value) for name, value in conn.execute(self._q["counters"])}

    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel with the row locked (see `cancel_change`); the record after, None when unknown.

        Raises BackendError.
        """

        def apply(conn: psycopg.Connection[Any]) -> StatusRecord | None:
            record = self._locked(conn, [task_id]).get(task_id)
            updated = None if record is None else cancel_change(record, now, result_ttl_s)
            if updated is not None:
                conn.execute(self._q["update_many"], _columns([updated]))
            return updated or record

        return self._db.run("cancel a task", apply)

    def _flow_lock(self, conn: psycopg.Connection[Any], kind: str, keys: Iterable[str]) -> None:
        for key in sorted(keys):
            conn.execute(self._q["flow_lock"], {"lock": f"{self.namespace}_{kind}:{key}"})

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every limiter (see ResultBackend), with the keys locked.

        Raises BackendError.
        """

        def reserve(conn: psycopg.Connection[Any]) -> float:
            self._flow_lock(conn, "rate", limits)
            conn.execute(self._q["rate_purge"], {"now": now})
            rows = conn.execute(self._q["rate_get"], {"keys": list(limits)}).fetchall()
            stored = {str(key): float(tat) for key, tat in rows}
            slot, after = next_slot({k: stored.get(k) for k in limits}, limits, now)
            params = {"keys": list(after), "tats": list(after.values())}
            conn.execute(self._q["rate_put"], params)
            return slot

        return self._db.run("reserve a rate limit slot", reserve)

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` unless a live claim holds it (see ResultBackend), key locked.

        Raises BackendError.
        """

        def claim(conn: psycopg.Connection[Any]) -> str | None:
            self._flow_lock(conn, "unique", [key])
            row = conn.execute(self._q["unique_holder"], {"key": key, "now": now}).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(self._q["unique_purge"], {"now": now})
            params = {"key": key, "holder": task_id, "expires_at": now + ttl_s}
            conn.execute(self._q["unique_put"], params)
            return None

        return self._db.run("claim a unique key", claim)

    def release_unique(self, key: str, task_id: str) -> bool:
        """Drop `key` if `task_id` holds it; raises BackendError."""
        with self._db.autocommit("release a unique key") as conn:
            params = {"key": key, "holder": task_id}
            return conn.execute(self._q["unique_release"], params).rowcount > 0

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume `queue`; raises BackendError."""
        with self._db.autocommit("pause a queue" if paused else "resume a queue") as conn:
            params = {"queue": queue, "now": self.clock.now()}
            conn.execute(self._q["pause" if paused else "resume"], params)

    def paused_queues(self) -> set[str]:
        """The paused queues; raises BackendError."""
        with self._db.autocommit("list paused queues") as conn:
            return {str(row[0]) for row in conn.execute(self._q["paused"])}


def _columns(records: Iterable[StatusRecord]) -> dict[str, list[Any]]:
    """Records as the parallel arrays the batch queries unnest."""
    columns: dict[str, list[Any]] = {
        "ids": [],
        "states": [],
        "attempts": [],
        "expires": [],
        "data": [],
    }
    for record in records:
        columns["ids"].append(record.id)
        columns["states"].append(str(record.state))
        columns["attempts"].append(record.attempt)
        columns["expires"].append(record.expires_at)
        columns["data"].append(encode_record(record))
    return columns
