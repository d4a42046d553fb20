"""The schedule store contract: versioned schedule entries plus the beat leader lease.

Every update is optimistic: it names the version it read and is refused when the stored entry
moved on, so two beats (or a beat and `schedule apply`) never overwrite each other blindly.
"""

from __future__ import annotations

import dataclasses
import json
from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stemrun.errors import ScheduleStoreError
from stemrun.store_base import Store

if TYPE_CHECKING:
    from stemrun.config.model import ScheduleConfig

#: The name of the one lease beats compete for in a store (per namespace).
BEAT_LEASE = "beat"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleEntry:
    """One named schedule and its run state; times are epoch seconds.

    `last_run_at` and `next_run_at` are *scheduled* times (a fire's identity), not the moments
    beat happened to enqueue them; `version` is 0 for an entry never stored.
    """

    name: str
    task: str
    spec: str
    timezone: str = "UTC"
    queue: str | None = None
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    jitter_s: float = 0.0
    enabled: bool = True
    last_run_at: float | None = None
    next_run_at: float | None = None
    total_run_count: int = 0
    last_error: str | None = None
    version: int = 0

    @classmethod
    def declared(cls, schedule: ScheduleConfig) -> ScheduleEntry:
        """A fresh entry (no run state) from a stem.yaml schedule."""
        return cls(
            name=schedule.name,
            task=schedule.task,
            spec=schedule.spec,
            timezone=schedule.timezone,
            queue=schedule.queue,
            args=dict(schedule.args),
            jitter_s=schedule.jitter_s,
            enabled=schedule.enabled,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleEntry:
        """The entry in `data`, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


#: The fields stem.yaml declares; the others are run state that only beat moves.
DECLARED_FIELDS = ("task", "spec", "timezone", "queue", "args", "jitter_s", "enabled")


def encode_entry(entry: ScheduleEntry) -> str:
    """JSON text of an entry; raises ScheduleStoreError when its args are not JSON."""
    try:
        return json.dumps(entry.to_dict(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ScheduleStoreError(f"schedule {entry.name!r}: args must be JSON: {exc}") from exc


def decode_entry(text: str | bytes) -> ScheduleEntry:
    """The entry stored as JSON `text`; raises ScheduleStoreError for corrupt data."""
    try:
        return ScheduleEntry.from_dict(json.loads(text))
    except (TypeError, ValueError) as exc:
        raise ScheduleStoreError(f"corrupt schedule entry in the store: {exc}") from exc


class ScheduleStore(Store):
    """Where schedule entries and the beat lease live; every method may raise ScheduleStoreError.

    Versions: `add` stores version 1; `update` and `remove` succeed only when the caller's
    `version` is the stored one, and `update` stores version + 1.
    """

    role = "schedule store"
    error = ScheduleStoreError
    unavailable = ScheduleStoreError

    @abstractmethod
    def get(self, name: str) -> ScheduleEntry | None:
        """The entry, or None."""

    @abstractmethod
    def entries(self) -> list[ScheduleEntry]:
        """Every entry, ordered by name."""

    @abstractmethod
    def due(self, now: float, limit: int = 100) -> list[ScheduleEntry]:
        """Enabled entries with `next_run_at <= now`, earliest first, at most `limit`."""

    @abstractmethod
    def next_due_at(self) -> float | None:
        """The earliest `next_run_at` of an enabled entry (None when nothing is armed)."""

    @abstractmethod
    def add(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Insert an entry whose name is absent; returns it stored (version 1), else None."""

    @abstractmethod
    def update(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Replace the entry if its stored version is `entry.version`; returns the stored
        entry (version + 1), or None on a version conflict or when it is gone."""

    @abstractmethod
    def remove(self, name: str, version: int | None = None) -> bool:
        """Delete the entry (only at `version`, when given); False if absent or moved on."""

    @abstractmethod
    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        """Take the beat lease if free or expired, or extend it if `owner` holds it."""

    @abstractmethod
    def renew_lease(self, owner: str, ttl_s: float) -> bool:
        """Extend the lease only if `owner` holds it and it has not expired."""

    @abstractmethod
    def release_lease(self, owner: str) -> None:
        """Give the lease up if `owner` holds it (a successor need not wait for the TTL)."""

    @abstractmethod
    def lease_owner(self) -> str | None:
        """Who holds an unexpired lease, if anyone."""
