"""The in-memory result backend: one process only, for tests and embedded use.

Records are kept as JSON text, like every other backend stores them, so a value that would not
survive Redis or SQLite fails here too and callers never share mutable state with the store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

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
from stemrun.store_base import InProcessStore, StoreOptions
from stemrun.telemetry import Heartbeat


class MemoryBackend(
    InProcessStore, ResultBackend, RecordListing, Telemetry, Chords, FlowControl, Outbox
):
    """Result backend held in this process's memory; thread-safe.

    Raises BackendError only for values that are not JSON.
    """

    def __init__(self, url: str = "memory://", **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._lock = threading.RLock()
        self._records: dict[str, tuple[str, float | None]] = {}  # id -> (json, expires_at)
        self._workers: dict[str, tuple[str, float]] = {}  # id -> (json info, expires_at)
        # chord id -> member index -> (json result, expires_at)
        self._chords: dict[str, dict[int, tuple[str, float]]] = {}
        self._counters: dict[str, int] = {}
        self._rates: dict[str, float] = {}  # rate limiter key -> next free slot
        self._uniques: dict[str, tuple[str, float]] = {}  # key -> (holder id, expires_at)
        self._paused: set[str] = set()
        self._outbox: dict[str, tuple[float, bytes]] = {}  # id -> (kept since, message)

    def _live(self, task_id: str, now: float) -> StatusRecord | None:
        stored = self._records.get(task_id)
        if stored is None or (stored[1] is not None and stored[1] < now):
            return None
        return decode_record(stored[0])

    def _store(self, record: StatusRecord) -> None:
        self._records[record.id] = (encode_record(record), record.expires_at)

    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records whose id is absent (or expired); raises BackendError for non-JSON."""
        encoded = [(r.id, encode_record(r), r.expires_at) for r in records]
        result: list[bool] = []
        with self._lock:
            now = self.clock.now()
            for task_id, text, expires_at in encoded:
                stored = self._records.get(task_id)
                free = stored is None or (stored[1] is not None and stored[1] < now)
                if free:
                    self._records[task_id] = (text, expires_at)
                result.append(free)
        return result

    def create_pending(
        self, records: Sequence[StatusRecord], messages: Sequence[bytes]
    ) -> list[bool]:
        """`create`, keeping each new record's message; raises BackendError for non-JSON."""
        with self._lock:
            created = self.create(records)
            now = self.clock.now()
            for record, message, new in zip(records, messages, created, strict=True):
                if new:
                    self._outbox[record.id] = (now, message)
            return created

    def pending(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The kept messages of these ids."""
        with self._lock:
            return {i: self._outbox[i][1] for i in task_ids if i in self._outbox}

    def claim_pending(self, before: float, now: float, limit: int) -> dict[str, bytes]:
        """The oldest kept messages, restamped."""
        with self._lock:
            due = sorted((since, i) for i, (since, _) in self._outbox.items() if since < before)
            claimed = {}
            for _, task_id in due[:limit]:
                message = self._outbox[task_id][1]
                self._outbox[task_id] = (now, message)
                claimed[task_id] = message
            return claimed

    def clear_pending(self, task_ids: Sequence[str]) -> None:
        """Forget kept messages."""
        with self._lock:
            for task_id in task_ids:
                self._outbox.pop(task_id, None)

    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired."""
        with self._lock:
            return self._live(task_id, self.clock.now())

    def list_records(
        self,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[StatusRecord]:
        """Live records matching the filters, newest first."""
        with self._lock:
            now = self.clock.now()
            live = [self._live(task_id, now) for task_id in self._records]
        wanted = [
            r
            for r in live
            if r is not None
            and (state is None or str(r.state) == state)
            and (task is None or r.task == task)
            and (queue is None or r.queue == queue)
        ]
        wanted.sort(key=lambda r: (-r.created_at, r.id))
        return wanted[offset : offset + limit]

    def transition(self, changes: Sequence[Transition]) -> list[bool]:
        """Apply fenced transitions; raises BackendError for non-JSON values."""
        result: list[bool] = []
        with self._lock:
            now = self.clock.now()
            for change in changes:
                record = self._live(change.task_id, now)
                updated = None if record is None else apply_transition(record, change)
                if updated is not None:
                    self._store(updated)
                result.append(updated is not None)
        return result

    def replace(self, record: StatusRecord) -> None:
        """Overwrite a record unconditionally; raises BackendError for non-JSON values."""
        with self._lock:
            self._store(record)

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove records."""
        with self._lock:
            for task_id in task_ids:
                self._records.pop(task_id, None)

    def set_progress(
        self, task_id: str, attempt: int, fraction: float | None, meta: Mapping[str, Any]
    ) -> bool:
        """Record progress unless fenced out; raises BackendError for non-JSON meta."""
        with self._lock:
            record = self._live(task_id, self.clock.now())
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
                self._store(updated)
            return updated is not None

    def put_worker(self, beat: Heartbeat, ttl_s: float) -> None:
        """Keep a heartbeat; raises BackendError for a value that is not JSON."""
        with self._lock:
            now = self.clock.now()
            self._workers[beat.id] = (encode_heartbeat(beat, now), now + ttl_s)

    def workers(self) -> list[Heartbeat]:
        """Heartbeats of workers seen within their TTL, ordered by id."""
        with self._lock:
            now = self.clock.now()
            live = [text for text, until in self._workers.values() if until >= now]
        return decode_heartbeats(live)

    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat."""
        with self._lock:
            self._workers.pop(worker_id, None)

    def purge_expired(self, now: float) -> int:
        """Delete records (and heartbeats) past their expiry; returns how many records."""
        with self._lock:
            doomed = [k for k, (_, exp) in self._records.items() if exp is not None and exp < now]
            for key in doomed:
                del self._records[key]
            for key in [k for k, (_, until) in self._workers.items() if until < now]:
                del self._workers[key]
            for chord_id, members in list(self._chords.items()):
                if all(until < now for _, until in members.values()):
                    del self._chords[chord_id]
        return len(doomed)

    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record a chord member's result; the ordered results once complete (see Chords).

        Raises ValueError for an index outside 0..size-1 or a result that is not JSON.
        """
        check_chord_member(index, size)
        text = json.dumps(result, allow_nan=False)
        with self._lock:
            now = self.clock.now()
            members = self._chords.setdefault(chord_id, {})
            for key in [k for k, (_, until) in members.items() if until < now]:
                del members[key]
            members.setdefault(index, (text, now + ttl_s))
            if len(members) < size:
                return None
            texts = [members[i][0] for i in range(size)]
        return [json.loads(t) for t in texts]

    def ping(self) -> None:
        """Always answers: it lives in this process."""

    def close(self) -> None:
        """Nothing to release: the data lives as long as the process (shared instances)."""

    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters under the lock."""
        with self._lock:
            for name, value in increments.items():
                self._counters[name] = self._counters.get(name, 0) + int(value)

    def counters(self) -> dict[str, int]:
        """Every counter's total."""
        with self._lock:
            return dict(self._counters)

    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel under the lock (see `cancel_change`); the record after, None when unknown."""
        with self._lock:
            record = self._live(task_id, self.clock.now())
            updated = None if record is None else cancel_change(record, now, result_ttl_s)
            if updated is not None:
                self._store(updated)
            return updated or record

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every limiter in `limits` (see FlowControl)."""
        with self._lock:
            tats = {key: self._rates.get(key) for key in limits}
            slot, after = next_slot(tats, limits, now)
            self._rates.update(after)
            for key in [k for k, tat in self._rates.items() if tat < now]:
                del self._rates[key]  # a past slot means the same as no slot
            return slot

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` unless a live claim holds it (see FlowControl)."""
        with self._lock:
            held = self._uniques.get(key)
            if held is not None and held[1] > now:
                return held[0]
            self._uniques[key] = (task_id, now + ttl_s)
            return None

    def release_unique(self, key: str, task_id: str) -> bool:
        """Drop `key` if `task_id` holds it."""
        with self._lock:
            held = self._uniques.get(key)
            if held is None or held[0] != task_id:
                return False
            del self._uniques[key]
            return True

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume `queue`."""
        with self._lock:
            (self._paused.add if paused else self._paused.discard)(queue)

    def paused_queues(self) -> set[str]:
        """The paused queues."""
        with self._lock:
            return set(self._paused)
