"""The result backend contract: status records, progress and worker heartbeats.

Writes are fenced: a transition is ignored once the record is terminal or when it comes from an
older attempt than the one recorded, so the first terminal result wins and a stale owner's late
write changes nothing.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemrun.config.model import TlsConfig
from stemrun.errors import BackendError
from stemrun.state import TERMINAL, TaskState
from stemrun.url import mask_url, scheme_of


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRecord:
    """The stored outcome of one task (SPEC §4)."""

    id: str
    task: str
    state: TaskState
    queue: str
    attempt: int = 0
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}
    progress: float | None = None
    progress_meta: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    dead_letter_reason: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    expires_at: float | None = None  # when the stored record may be dropped (result TTL)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field."""
        data = dataclasses.asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatusRecord:
        """Rebuild a record from `to_dict()` output (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["state"] = TaskState(values["state"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A fenced change of one record: new state, the attempt making it, and fields to set.

    `changes` keys are StatusRecord field names; `meta` is merged key by key, the rest replaced.
    """

    task_id: str
    attempt: int
    state: TaskState
    changes: Mapping[str, Any] = field(default_factory=dict)


def apply_transition(record: StatusRecord, change: Transition) -> StatusRecord | None:
    """The record after `change`, or None when fencing rejects it. Shared by every backend."""
    if record.state in TERMINAL or change.attempt < record.attempt:
        return None
    values = dict(change.changes)
    if "meta" in values:
        values["meta"] = {**record.meta, **values["meta"]}
    return dataclasses.replace(record, state=change.state, attempt=change.attempt, **values)


#: How long chord counters live after their entry was recorded (a chord may run for days).
CHORD_TTL_S = 7 * 86400.0


def check_chord_member(index: int, size: int) -> None:
    """Raises ValueError unless 0 <= index < size."""
    if not 0 <= index < size:
        raise ValueError(f"chord member index {index} is outside 0..{size - 1}")


class Backend(ABC):
    """Store and read task status records.

    All methods raise BackendError (or BackendUnavailable) on store failures.
    """

    url: str

    @abstractmethod
    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records that do not exist yet (one transaction); True where inserted."""

    @abstractmethod
    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired."""

    @abstractmethod
    def transition(self, changes: Sequence[Transition]) -> list[bool]:
        """Apply fenced transitions (one transaction); False where fencing rejected one."""

    @abstractmethod
    def replace(self, record: StatusRecord) -> None:
        """Overwrite a record unconditionally (DLQ replay resets a terminal record)."""

    @abstractmethod
    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove records (a failed publish undoes its records)."""

    @abstractmethod
    def set_progress(
        self, task_id: str, attempt: int, fraction: float | None, meta: Mapping[str, Any]
    ) -> bool:
        """Record progress of a running attempt; False when fenced out."""

    @abstractmethod
    def put_worker(self, worker_id: str, info: Mapping[str, Any], ttl_s: float) -> None:
        """Publish a worker heartbeat that expires after `ttl_s` without renewal."""

    @abstractmethod
    def workers(self) -> list[dict[str, Any]]:
        """Heartbeats of every worker seen within its TTL."""

    @abstractmethod
    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat (clean shutdown)."""

    @abstractmethod
    def purge_expired(self, now: float) -> int:
        """Delete records whose result TTL has passed; returns how many."""

    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record member `index`'s result of a chord (or group) of `size` members, atomically.

        The same index twice counts once (the first result stays). Returns the members' results
        in index order when, after this call, all `size` are recorded and this call recorded the
        last one or repeated a recorded index (a redelivered completion re-drives the idempotent
        callback enqueue); otherwise None. Entries expire `ttl_s` after they were recorded.
        Raises ValueError for an index outside 0..size-1, BackendError when the store cannot.
        """
        raise BackendError(f"result backend {mask_url(self.url)} does not support chords")

    @abstractmethod
    def ping(self) -> None:
        """Check the store answers; raises BackendError (or BackendUnavailable) when it does not."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters atomically (one transaction or round trip); missing start at 0.

        Raises BackendError (also when the store keeps no counters).
        """
        raise BackendError(f"result backend {mask_url(self.url)} does not support counters")

    def counters(self) -> dict[str, int]:
        """Every counter's total since the store was created. Raises BackendError."""
        raise BackendError(f"result backend {mask_url(self.url)} does not support counters")

    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel a task atomically (see `cancel_change`); the record after, None when unknown.

        Raises BackendError.
        """
        raise BackendError(f"result backend {mask_url(self.url)} does not support cancel")

    def get_many(self, task_ids: Sequence[str]) -> dict[str, StatusRecord]:
        """The live records among `task_ids`, by id. Raises BackendError."""
        found = {task_id: self.get(task_id) for task_id in dict.fromkeys(task_ids)}
        return {task_id: record for task_id, record in found.items() if record is not None}

    def list_records(
        self,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[StatusRecord]:
        """Live records matching every given filter, newest first, paged.

        Raises BackendError (also when the store cannot list records).
        """
        raise BackendError(f"result backend {mask_url(self.url)} does not support listing")

    # -- flow control (stemrun.flow, docs/flow-control.md) ---------------------------------

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every rate limiter in `limits` (key -> interval_s), atomically.

        Returns the slot: the earliest time >= `now` that every limiter allows (see `next_slot`);
        each limiter's next free slot moves to slot + its interval. Raises BackendError.
        """
        raise BackendError(f"result backend {mask_url(self.url)} does not support rate limits")

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` for `ttl_s` unless a live claim holds it, atomically.

        Returns None when this call took it, else the holder's id (`task_id` itself when it
        already held the key). Raises BackendError.
        """
        raise BackendError(f"result backend {mask_url(self.url)} does not support unique tasks")

    def release_unique(self, key: str, task_id: str) -> bool:
        """Drop `key` if `task_id` still holds it; True when dropped. Raises BackendError."""
        raise BackendError(f"result backend {mask_url(self.url)} does not support unique tasks")

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (or resume) consumption of `queue` on every worker. Raises BackendError."""
        raise BackendError(f"result backend {mask_url(self.url)} does not support pausing")

    def paused_queues(self) -> set[str]:
        """The queues paused now. Raises BackendError."""
        raise BackendError(f"result backend {mask_url(self.url)} does not support pausing")


def open_backend(
    url: str,
    *,
    namespace: str = "stem",
    base_dir: Path | None = None,
    tls: TlsConfig | None = None,
) -> Backend:
    """Open the result backend for `url`.

    `tls` is the stem.yaml tls section, used by `rediss://` and Postgres URLs.
    Raises BackendError for an unknown scheme or a store that cannot be a backend.
    """
    scheme = scheme_of(url)
    if scheme == "memory":
        from stemrun.backends.memory import MemoryBackend

        return MemoryBackend.shared(url, namespace=namespace)
    if scheme == "sqlite":
        from stemrun.backends.sqlite import SqliteBackend

        return SqliteBackend(url, namespace=namespace, base_dir=base_dir)
    if scheme in ("postgres", "postgresql"):
        from stemrun.backends.postgres import PostgresBackend

        return PostgresBackend(url, namespace=namespace, tls=tls)
    if scheme in ("redis", "rediss"):
        from stemrun.backends.redis import RedisBackend

        return RedisBackend(url, namespace=namespace, tls=tls)
    raise BackendError(
        f"result backend {mask_url(url)}: unknown URL scheme {scheme!r} "
        "(expected sqlite://, redis://, rediss://, postgresql:// or memory://)"
    )


#: `meta` key set on a running task's record by `stemrun cancel`; its worker interrupts it.
CANCEL_REQUESTED = "cancel_requested_at"


def cancel_change(
    record: StatusRecord, now: float, result_ttl_s: float | None = None
) -> StatusRecord | None:
    """The record after a cancel request, or None when nothing changes (already terminal).

    Queued or retried (waiting): `cancelled` at once, `meta.reason = "cancelled"`, so no worker
    ever runs it. Running: flagged with `meta.cancel_requested_at`; its worker interrupts the
    handler at its next ctx call.
    """
    if record.state in TERMINAL:
        return None
    if record.state == TaskState.RUNNING:
        return dataclasses.replace(record, meta={**record.meta, CANCEL_REQUESTED: now})
    return dataclasses.replace(
        record,
        state=TaskState.CANCELLED,
        finished_at=now,
        meta={**record.meta, "reason": "cancelled"},
        expires_at=None if result_ttl_s is None else now + result_ttl_s,
    )


def next_slot(
    tats: Mapping[str, float | None], limits: Mapping[str, float], now: float
) -> tuple[float, dict[str, float]]:
    """GCRA over several limiters: the slot, and each limiter's next free slot after it.

    `tats` holds each limiter's stored next free slot (None when it has none). Starting at the
    latest of those and `now` keeps every limiter's starts at least its interval apart, so no
    window of a limiter's period ever holds more than N + 1 starts. Shared by every backend.
    """
    slot = max([now, *(tat for tat in tats.values() if tat is not None)])
    return slot, {key: slot + interval for key, interval in limits.items()}
