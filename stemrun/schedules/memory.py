"""The in-memory schedule store: one process only, for tests and embedded use.

Entries are kept as JSON text, as the other stores keep them, so args that would not survive
SQLite or Redis fail here too and callers never share mutable state with the store.
"""

from __future__ import annotations

import threading
from typing import Unpack

from stemrun.schedules.store import ScheduleEntry, ScheduleStore, decode_entry, encode_entry
from stemrun.store_base import InProcessStore, StoreOptions


class MemoryScheduleStore(InProcessStore, ScheduleStore):
    """Schedule entries and the beat lease in this process's memory; thread-safe."""

    def __init__(self, url: str = "memory://", **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        self._lease: tuple[str, float] | None = None  # (owner, expires_at)

    def get(self, name: str) -> ScheduleEntry | None:
        """The entry, or None."""
        with self._lock:
            text = self._entries.get(name)
        return None if text is None else decode_entry(text)

    def entries(self) -> list[ScheduleEntry]:
        """Every entry, ordered by name."""
        with self._lock:
            texts = [self._entries[name] for name in sorted(self._entries)]
        return [decode_entry(text) for text in texts]

    def due(self, now: float, limit: int = 100) -> list[ScheduleEntry]:
        """Enabled entries with `next_run_at <= now`, earliest first."""
        armed = [e for e in self.entries() if e.enabled and e.next_run_at is not None]
        ready = [e for e in armed if e.next_run_at is not None and e.next_run_at <= now]
        return sorted(ready, key=lambda e: (e.next_run_at, e.name))[:limit]

    def next_due_at(self) -> float | None:
        """The earliest `next_run_at` of an enabled entry."""
        times = [e.next_run_at for e in self.entries() if e.enabled and e.next_run_at is not None]
        return min(times, default=None)

    def add(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Insert if the name is absent; returns the stored entry (version 1)."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": 1})
        text = encode_entry(stored)
        with self._lock:
            if entry.name in self._entries:
                return None
            self._entries[entry.name] = text
        return stored

    def update(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Replace at `entry.version`; returns the stored entry (version + 1) or None."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": entry.version + 1})
        text = encode_entry(stored)
        with self._lock:
            current = self._entries.get(entry.name)
            if current is None or decode_entry(current).version != entry.version:
                return None
            self._entries[entry.name] = text
        return stored

    def remove(self, name: str, version: int | None = None) -> bool:
        """Delete the entry (only at `version`, when given)."""
        with self._lock:
            current = self._entries.get(name)
            if current is None:
                return False
            if version is not None and decode_entry(current).version != version:
                return False
            del self._entries[name]
            return True

    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        """Take the lease if free, expired or already ours."""
        with self._lock:
            now = self.clock.now()
            if self._lease is not None and self._lease[0] != owner and self._lease[1] > now:
                return False
            self._lease = (owner, now + ttl_s)
            return True

    def renew_lease(self, owner: str, ttl_s: float) -> bool:
        """Extend the lease only while `owner` holds it unexpired."""
        with self._lock:
            now = self.clock.now()
            if self._lease is None or self._lease[0] != owner or self._lease[1] <= now:
                return False
            self._lease = (owner, now + ttl_s)
            return True

    def release_lease(self, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        with self._lock:
            if self._lease is not None and self._lease[0] == owner:
                self._lease = None

    def lease_owner(self) -> str | None:
        """Who holds an unexpired lease."""
        with self._lock:
            if self._lease is None or self._lease[1] <= self.clock.now():
                return None
            return self._lease[0]

    def ping(self) -> None:
        """Always answers."""

    def close(self) -> None:
        """Nothing to close (the shared store outlives its handles)."""
