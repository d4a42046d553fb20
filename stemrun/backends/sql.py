"""What the SQLite and Postgres result backends share: the backend written once over `SqlDatabase`.

Both keep status records in `{ns}_status` (the record whole as JSON in `data`, with `state`,
`attempt` and `expires_at` copied into columns), heartbeats, chords, counters and flow-control
rows in tables of the same names, read and written by the same named queries. Fenced writes
read the batch's live records with their rows locked (`lock_live`), apply `apply_transition` to
each change in order and write the survivors back (`update_many`), all in one transaction, so
racing workers serialise and the first terminal result wins. Times come from the store's clock,
never from the server. A subclass opens its database and supplies `create_in` and `_serialise`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stemrun.backends.base import (
    CHORD_TTL_S,
    Chords,
    FlowControl,
    Outbox,
    RecordListing,
    ResultBackend,
    Telemetry,
    check_chord_member,
    next_slot,
)
from stemrun.backends.codec import decode_heartbeats, decode_record, encode_heartbeat, encode_record
from stemrun.backends.record import StatusRecord, Transition, apply_transition, cancel_change
from stemrun.sql_db import DbT, SqlConnection, SqlStore
from stemrun.telemetry import Heartbeat


class SqlBackend(
    SqlStore[DbT], ResultBackend, RecordListing, Telemetry, Chords, FlowControl, Outbox
):
    """A result backend on a SQL database; every method raises BackendError (BackendUnavailable
    when the server cannot be reached), naming the masked URL."""

    @abstractmethod
    def _serialise(self, conn: SqlConnection, kind: str, keys: Iterable[str]) -> None:
        """Make transactions on the same `kind` of `keys` take turns until this one commits."""

    @abstractmethod
    def create_in(self, conn: SqlConnection, records: Sequence[StatusRecord]) -> list[bool]:
        """`create` within the caller's transaction on this database."""

    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records whose id is absent (or expired), in one transaction.

        Raises BackendError on store failure or a value that is not JSON.
        """
        if not records:
            return []
        return self._db.run("create status records", lambda conn: self.create_in(conn, records))

    def create_pending(
        self, records: Sequence[StatusRecord], messages: Sequence[bytes]
    ) -> list[bool]:
        """`create`, keeping each new record's message in the outbox; raises BackendError."""

        def insert(conn: SqlConnection) -> list[bool]:
            inserted = self.create_in(conn, records)
            now = self.clock.now()
            kept = zip(records, messages, inserted, strict=True)
            rows = [{"id": r.id, "since": now, "message": m} for r, m, new in kept if new]
            self._db.batch(conn, self._q["put_pending"], rows)
            return inserted

        return self._db.run("create status records", insert) if records else []

    def pending(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The kept messages of these ids; raises BackendError."""
        with self._db.read("read the outbox") as conn:
            rows = conn.execute(self._q["pending"], {"ids": self._db.array(task_ids)})
            return {row[0]: bytes(row[1]) for row in rows}

    def claim_pending(self, before: float, now: float, limit: int) -> dict[str, bytes]:
        """The oldest kept messages, restamped; raises BackendError."""
        params = {"before": before, "now": now, "limit": limit}

        def claim(conn: SqlConnection) -> dict[str, bytes]:
            return {row[0]: bytes(row[1]) for row in conn.execute(self._q["claim_pending"], params)}

        return self._db.run("claim outbox messages", claim)

    def clear_pending(self, task_ids: Sequence[str]) -> None:
        """Forget kept messages; raises BackendError."""
        if task_ids:
            with self._db.write("clear the outbox") as conn:
                conn.execute(self._q["clear_pending"], {"ids": self._db.array(task_ids)})

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

    def _locked(self, conn: SqlConnection, ids: Iterable[str]) -> dict[str, StatusRecord]:
        # Sorted so concurrent batches lock the same rows in the same order (no deadlock).
        params = {"ids": self._db.array(sorted(set(ids))), "now": self.clock.now()}
        records = (decode_record(row[0]) for row in conn.execute(self._q["lock_live"], params))
        return {record.id: record for record in records}

    def _apply(self, conn: SqlConnection, changes: Sequence[Transition]) -> list[bool]:
        current = self._locked(conn, (change.task_id for change in changes))
        return self._apply_to(conn, current, changes)

    def _apply_to(
        self, conn: SqlConnection, current: dict[str, StatusRecord], changes: Sequence[Transition]
    ) -> list[bool]:
        """Fence `changes` against the `current` (locked) records and write the survivors."""
        dirty: set[str] = set()
        result = []
        for change in changes:
            record = current.get(change.task_id)
            updated = None if record is None else apply_transition(record, change)
            if updated is not None:
                current[change.task_id] = updated
                dirty.add(change.task_id)
            result.append(updated is not None)
        self._write_back(conn, [current[task_id] for task_id in sorted(dirty)])
        return result

    def _write_back(self, conn: SqlConnection, records: Sequence[StatusRecord]) -> None:
        if records:
            self._db.batch(conn, self._q["update_many"], [record_row(r) for r in records])

    def transition(self, changes: Sequence[Transition]) -> list[bool]:
        """Apply fenced transitions in one transaction; raises BackendError."""
        if not changes:
            return []
        return self._db.run("update status records", lambda conn: self._apply(conn, changes))

    def replace(self, record: StatusRecord) -> None:
        """Overwrite a record unconditionally; raises BackendError."""
        row = record_row(record)
        with self._db.write("replace a status record") as conn:
            conn.execute(self._q["upsert"], row)

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove records in one statement; raises BackendError."""
        with self._db.write("delete status records") as conn:
            conn.execute(self._q["delete"], {"ids": self._db.array(task_ids)})

    def set_progress(
        self, task_id: str, attempt: int, fraction: float | None, meta: Mapping[str, Any]
    ) -> bool:
        """Record progress unless fenced out (terminal or older attempt); raises BackendError."""

        def record(conn: SqlConnection) -> bool:
            current = self._locked(conn, [task_id])
            if task_id not in current:
                return False
            change = Transition(
                task_id=task_id,
                attempt=attempt,
                state=current[task_id].state,
                changes={"progress": fraction, "progress_meta": dict(meta)},
            )
            return self._apply_to(conn, current, [change])[0]

        return self._db.run("record progress", record)

    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel with the row locked (see `cancel_change`); the record after, None when unknown.

        Raises BackendError.
        """

        def apply(conn: SqlConnection) -> StatusRecord | None:
            record = self._locked(conn, [task_id]).get(task_id)
            updated = None if record is None else cancel_change(record, now, result_ttl_s)
            if updated is not None:
                self._write_back(conn, [updated])
            return updated or record

        return self._db.run("cancel a task", apply)

    def purge_expired(self, now: float) -> int:
        """Delete records (and heartbeats, chords) past their expiry; returns how many records.

        Raises BackendError.
        """
        with self._db.transaction("purge expired records") as conn:
            conn.execute(self._q["purge_expired_workers"], {"now": now})
            conn.execute(self._q["purge_expired_chords"], {"now": now})
            return conn.execute(self._q["purge_expired"], {"now": now}).rowcount

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

    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters in one transaction (`value = value + ?`); raises BackendError."""
        # Sorted so concurrent batches lock the same rows in the same order (no deadlock).
        rows = [{"name": name, "value": int(value)} for name, value in sorted(increments.items())]
        if rows:
            with self._db.write("add to counters") as conn:
                self._db.batch(conn, self._q["incr_counters"], rows)

    def counters(self) -> dict[str, int]:
        """Every counter's total; raises BackendError."""
        with self._db.read("read counters") as conn:
            return {str(name): int(value) for name, value in conn.execute(self._q["counters"])}

    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record a chord member's result; the ordered results once complete (see Chords).

        Members of one chord take turns (`_serialise`), so each one's count sees the others'
        rows and exactly one first-time add finds the chord complete. Raises ValueError (bad
        index, result not JSON) or BackendError.
        """
        check_chord_member(index, size)
        params = {
            "chord_id": chord_id,
            "idx": index,
            "result": json.dumps(result, allow_nan=False),
            "expires_at": self.clock.now() + ttl_s,
        }

        def add(conn: SqlConnection) -> list[Any] | None:
            self._serialise(conn, "chords", [chord_id])
            conn.execute(self._q["chord_add"], params)
            row = conn.execute(self._q["chord_count"], params).fetchone()
            if row is None or row[0] < size:
                return None
            return [json.loads(r[0]) for r in conn.execute(self._q["chord_results"], params)]

        return self._db.run("record a chord member", add)

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every limiter (see FlowControl), with the keys serialised.

        Raises BackendError.
        """

        def reserve(conn: SqlConnection) -> float:
            self._serialise(conn, "rate", limits)
            conn.execute(self._q["rate_purge"], {"now": now})
            rows = conn.execute(self._q["rate_get"], {"keys": self._db.array(limits)}).fetchall()
            stored = {str(key): float(tat) for key, tat in rows}
            slot, after = next_slot({k: stored.get(k) for k in limits}, limits, now)
            rows = [{"key": key, "tat": tat} for key, tat in after.items()]
            self._db.batch(conn, self._q["rate_put"], rows)
            return slot

        return self._db.run("reserve a rate limit slot", reserve)

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` unless a live claim holds it (see FlowControl), key serialised.

        Raises BackendError.
        """

        def claim(conn: SqlConnection) -> str | None:
            self._serialise(conn, "unique", [key])
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


def record_row(record: StatusRecord) -> dict[str, Any]:
    """The named parameters that store `record` (`create`, `upsert`, `update_many`).

    Raises BackendError when a value in it is not JSON.
    """
    return {
        "id": record.id,
        "state": str(record.state),
        "attempt": record.attempt,
        "expires_at": record.expires_at,
        "data": encode_record(record),
    }
