"""The result backend contract: status records, and the capabilities a backend may add.

`ResultBackend` is what producers and workers need of every backend: create, read and fence
status records, progress and cancel. Worker heartbeats and counters (`Telemetry`), chord counting
(`Chords`), flow control (`FlowControl`), listing records (`RecordListing`) and keeping messages
until their broker has them (`Outbox`) are capabilities a backend class adds; callers ask for one
with `stemrun.store_base.require`. The record rules all backends share live in
stemrun.backends.record.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from stemrun.backends.record import StatusRecord, Transition
from stemrun.errors import BackendError, BackendUnavailable
from stemrun.store_base import Capability, Store
from stemrun.telemetry import Heartbeat

#: How long chord counters live after their entry was recorded (a chord may run for days).
CHORD_TTL_S = 7 * 86400.0


class ResultBackend(Store):
    """Store and read task status records.

    All methods raise BackendError (or BackendUnavailable) on store failures.
    """

    role = "result backend"
    error = BackendError
    unavailable = BackendUnavailable

    @abstractmethod
    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records that do not exist yet (one transaction); True where inserted."""

    @abstractmethod
    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired."""

    def get_many(self, task_ids: Sequence[str]) -> dict[str, StatusRecord]:
        """The live records among `task_ids`, by id (stores with a batch read override it)."""
        found = {task_id: self.get(task_id) for task_id in dict.fromkeys(task_ids)}
        return {task_id: record for task_id, record in found.items() if record is not None}

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
    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel a task atomically (see `record.cancel_change`); the record after, None when
        unknown."""

    @abstractmethod
    def purge_expired(self, now: float) -> int:
        """Delete records whose result TTL has passed; returns how many."""


class RecordListing(Capability):
    """List records by state, task and queue (the dashboard's Tasks page)."""

    purpose = "list status records"

    @abstractmethod
    def list_records(
        self,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[StatusRecord]:
        """Live records matching every given filter, newest first, paged."""


class Outbox(Capability):
    """Messages kept beside their new records until the broker has them.

    Used when broker and backend are different stores: a producer that dies (or loses the
    broker) between writing a record and publishing its message leaves the message here, and
    workers publish it later (stemrun.outbox). Entries are opaque bytes.
    """

    purpose = "keep messages until their broker has them"

    @abstractmethod
    def create_pending(
        self, records: Sequence[StatusRecord], messages: Sequence[bytes]
    ) -> list[bool]:
        """`create`, keeping `messages[i]` for each record inserted, in one transaction."""

    @abstractmethod
    def pending(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The kept messages of these ids, by id."""

    @abstractmethod
    def claim_pending(self, before: float, now: float, limit: int) -> dict[str, bytes]:
        """Up to `limit` messages kept since before `before`, oldest first, restamped `now` so
        that concurrent sweepers do not take them too."""

    @abstractmethod
    def clear_pending(self, task_ids: Sequence[str]) -> None:
        """Forget the kept messages of these ids (their broker has them)."""


class Telemetry(Capability):
    """Worker heartbeats and task counters (written by workers, read by `observe` and metrics)."""

    purpose = "keep worker heartbeats and task counters"

    @abstractmethod
    def put_worker(self, beat: Heartbeat, ttl_s: float) -> None:
        """Keep a worker's heartbeat (stamped with the store's time) until `ttl_s` passes."""

    @abstractmethod
    def workers(self) -> list[Heartbeat]:
        """Heartbeats of every worker seen within its TTL, ordered by worker id (unreadable
        ones skipped)."""

    @abstractmethod
    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat (clean shutdown)."""

    @abstractmethod
    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters atomically (one transaction or round trip); missing start at 0."""

    @abstractmethod
    def counters(self) -> dict[str, int]:
        """Every counter's total since the store was created."""


class Chords(Capability):
    """Count chord (and group) members atomically in the store."""

    purpose = "count chord members"

    @abstractmethod
    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record member `index`'s result of a chord (or group) of `size` members, atomically.

        The same index twice counts once (the first result stays). Returns the members' results
        in index order when, after this call, all `size` are recorded and this call recorded the
        last one or repeated a recorded index (a redelivered completion re-drives the idempotent
        callback enqueue); otherwise None. Entries expire `ttl_s` after they were recorded.
        Raises ValueError for an index outside 0..size-1 (see `check_chord_member`).
        """


def check_chord_member(index: int, size: int) -> None:
    """Raises ValueError unless 0 <= index < size."""
    if not 0 <= index < size:
        raise ValueError(f"chord member index {index} is outside 0..{size - 1}")


class FlowControl(Capability):
    """Global rate-limit slots, unique-task claims and queue pause (docs/flow-control.md)."""

    purpose = "enforce rate limits, unique tasks or queue pauses"

    @abstractmethod
    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every rate limiter in `limits` (key -> interval_s), atomically.

        Returns the slot: the earliest time >= `now` that every limiter allows (see `next_slot`);
        each limiter's next free slot moves to slot + its interval.
        """

    @abstractmethod
    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` for `ttl_s` unless a live claim holds it, atomically.

        Returns None when this call took it, else the holder's id (`task_id` itself when it
        already held the key).
        """

    @abstractmethod
    def release_unique(self, key: str, task_id: str) -> bool:
        """Drop `key` if `task_id` still holds it; True when dropped."""

    @abstractmethod
    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (or resume) consumption of `queue` on every worker."""

    @abstractmethod
    def paused_queues(self) -> set[str]:
        """The queues paused now."""


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
