"""The Redis schedule store: versioned entries in hashes, due times in a sorted set, one lease.

Writes are Lua scripts (`redis.lua`) that compare the version and update the entry and its
indexes atomically; reads are pipelined. Lease times come from the caller's clock, like the
other stores, so every beat must run with a reasonably synchronised clock (NTP).
"""

from __future__ import annotations

import math
from typing import Any, Unpack

from stemrun import redis_keys
from stemrun.redis_client import Endpoint, load_scripts
from stemrun.schedules.store import (
    BEAT_LEASE,
    ScheduleEntry,
    ScheduleStore,
    decode_entry,
    encode_entry,
)
from stemrun.store_base import StoreOptions

#: Redis drops a lease key this long after its TTL, so its own expiry (by the caller's clock)
#: decides who leads, and the key only disappears once every clock agrees it has lapsed.
LEASE_GRACE_MS = 1000


class RedisScheduleStore(ScheduleStore):
    """Schedule store on Redis (`redis://host:port/db`, `rediss://` with the tls section).

    Raises ScheduleStoreError naming the masked URL on a malformed URL, refused credentials, an
    unreachable server or a failed command.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._endpoint = Endpoint(self)
        self._redis = self._endpoint.connect()
        self._scripts = load_scripts(self._redis, "stemrun.schedules", "redis.lua")
        self._names = redis_keys.schedules(self.namespace)
        self._due = redis_keys.schedules_due(self.namespace)
        self._lease = redis_keys.lease(self.namespace, BEAT_LEASE)

    def _entry_keys(self, name: str) -> list[str]:
        return [redis_keys.schedule(self.namespace, name), self._names, self._due]

    def _run(self, script: str, keys: list[str], args: list[Any], what: str) -> int:
        with self._endpoint.guard(what):
            return int(self._scripts[script](keys=keys, args=args))

    def _load(self, names: list[str], what: str) -> list[ScheduleEntry]:
        """The entries of `names` in order (one pipelined round trip); vanished ones skipped."""
        if not names:
            return []
        with self._endpoint.guard(what):
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hget(redis_keys.schedule(self.namespace, name), "d")
            texts = pipe.execute()
        return [decode_entry(text) for text in texts if text is not None]

    def get(self, name: str) -> ScheduleEntry | None:
        """The entry, or None."""
        found = self._load([name], "read a schedule entry")
        return found[0] if found else None

    def entries(self) -> list[ScheduleEntry]:
        """Every entry, ordered by name."""
        with self._endpoint.guard("list schedule entries"):
            names = [_text(n) for n in self._redis.zrange(self._names, 0, -1)]
        return self._load(names, "list schedule entries")

    def due(self, now: float, limit: int = 100) -> list[ScheduleEntry]:
        """Enabled entries with `next_run_at <= now`, earliest first."""
        with self._endpoint.guard("find due schedule entries"):
            raw = self._redis.zrangebyscore(self._due, "-inf", now, start=0, num=limit)
        return self._load([_text(n) for n in raw], "find due schedule entries")

    def next_due_at(self) -> float | None:
        """The earliest `next_run_at` of an enabled entry."""
        with self._endpoint.guard("find the next due schedule entry"):
            first = self._redis.zrange(self._due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def add(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Insert if the name is absent; returns the stored entry (version 1)."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": 1})
        args = [entry.name, encode_entry(stored), _due(stored)]
        added = self._run("add", self._entry_keys(entry.name), args, "add a schedule entry")
        return stored if added else None

    def update(self, entry: ScheduleEntry) -> ScheduleEntry | None:
        """Replace at `entry.version`; returns the stored entry (version + 1) or None."""
        stored = ScheduleEntry.from_dict({**entry.to_dict(), "version": entry.version + 1})
        args = [entry.name, encode_entry(stored), _due(stored), entry.version]
        keys = self._entry_keys(entry.name)
        return stored if self._run("update", keys, args, "update a schedule entry") else None

    def remove(self, name: str, version: int | None = None) -> bool:
        """Delete the entry (only at `version`, when given)."""
        args = [name, "" if version is None else version]
        return bool(self._run("remove", self._entry_keys(name), args, "remove a schedule entry"))

    def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        """Take the lease if free, expired or already ours."""
        args = self._lease_args(owner, ttl_s)
        return bool(self._run("acquire_lease", [self._lease], args, "acquire the beat lease"))

    def renew_lease(self, owner: str, ttl_s: float) -> bool:
        """Extend the lease only while `owner` holds it unexpired."""
        args = self._lease_args(owner, ttl_s)
        return bool(self._run("renew_lease", [self._lease], args, "renew the beat lease"))

    def release_lease(self, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        self._run("release_lease", [self._lease], [owner], "release the beat lease")

    def lease_owner(self) -> str | None:
        """Who holds an unexpired lease."""
        with self._endpoint.guard("read the beat lease"):
            owner, until = self._redis.hmget(self._lease, ["o", "x"])
        if owner is None or until is None or float(until) <= self.clock.now():
            return None
        return _text(owner)

    def ping(self) -> None:
        """PING the server."""
        with self._endpoint.guard("ping"):
            self._redis.ping()

    def close(self) -> None:
        """Close the connection pool."""
        with self._endpoint.guard("close"):
            self._redis.close()

    def _lease_args(self, owner: str, ttl_s: float) -> list[Any]:
        now = self.clock.now()
        ttl_ms = math.ceil(ttl_s * 1000) + LEASE_GRACE_MS
        return [owner, repr(now), repr(now + ttl_s), ttl_ms]


def _due(entry: ScheduleEntry) -> str:
    if not entry.enabled or entry.next_run_at is None:
        return ""
    return repr(entry.next_run_at)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
