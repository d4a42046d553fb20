"""The in-memory result backend: one process only, for tests and embedded use.

Records are kept as JSON text, like every other backend stores them, so a value that would not
survive Redis or SQLite fails here too and callers never share mutable state with the store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

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


class MemoryBackend(Backend):
    """Result backend held in this process's memory; thread-safe.

    Raises BackendError only for values that are not JSON.
    """

    _shared: ClassVar[dict[tuple[str, str], MemoryBackend]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, url: str = "memory://", *, namespace: str = "stem", clock: Clock | None = None
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._records: dict[str, tuple[str, float | None]] = {}  # id -> (json, expires_at)
        self._workers: dict[str, tuple[str, float]] = {}  # id -> (json info, expires_at)
        # chord id -> member index -> (json result, expires_at)
        self._chords: dict[str, dict[int, tuple[str, float]]] = {}

    @classmethod
    def shared(cls, url: str, *, namespace: str, clock: Clock | None = None) -> MemoryBackend:
        """The process-wide backend for (url, namespace), so producers and workers meet."""
        with cls._shared_lock:
            backend = cls._shared.get((url, namespace))
            if backend is None:
                backend = cls(url, namespace=namespace, clock=clock)
                cls._shared[(url, namespace)] = backend
            return backend

    @classmethod
    def reset_shared(cls) -> None:
        """Forget every shared backend (test isolation)."""
        with cls._shared_lock:
            cls._shared.clear()

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

    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired."""
        with self._lock:
            return self._live(task_id, self.clock.now())

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

    def put_worker(self, worker_id: str, info: Mapping[str, Any], ttl_s: float) -> None:
        """Publish a heartbeat; raises BackendError for non-JSON info."""
        with self._lock:
            now = self.clock.now()
            self._workers[worker_id] = (encode_heartbeat(worker_id, info, now), now + ttl_s)

    def workers(self) -> list[dict[str, Any]]:
        """Heartbeats of workers seen within their TTL, ordered by id."""
        with self._lock:
            now = self.clock.now()
            live = sorted((k, text) for k, (text, until) in self._workers.items() if until >= now)
        return [json.loads(text) for _, text in live]

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
        """Record a chord member's result; the ordered results once complete (see Backend).

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
