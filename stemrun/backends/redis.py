"""The Redis result backend: status records as JSON in hashes, fenced by compare-and-set.

A record is one hash (`{ns}:status:{id}`, see `redis.lua`): the JSON of backends/codec.py, its
expiry, and a version. A batch of fenced transitions costs two round trips: one pipelined read
of the records and their versions, then one script that writes every updated record whose
version has not moved. A record that moved in between (another worker wrote it) is read again
and the transition re-applied, so `apply_transition` decides on the latest record and the first
terminal result wins. Records with a result TTL get a Redis TTL too, so they vanish on their own.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Unpack

from stemrun import redis_keys
from stemrun.backends.base import (
    CHORD_TTL_S,
    Chords,
    FlowControl,
    Outbox,
    ResultBackend,
    Telemetry,
    check_chord_member,
)
from stemrun.backends.codec import decode_heartbeats, decode_record, encode_heartbeat, encode_record
from stemrun.backends.record import StatusRecord, Transition, apply_transition, cancel_change
from stemrun.backends.write_cache import Current, RecentWrites
from stemrun.errors import BackendError
from stemrun.redis_client import Endpoint, load_scripts
from stemrun.store_base import StoreOptions
from stemrun.telemetry import Heartbeat

#: Redis drops an expired record this long after its `expires_at`, so a clock a little ahead
#: of another process's never loses a record that process still sees as live.
EXPIRY_GRACE_MS = 1000
#: Rounds of read + compare-and-set before a batch under constant contention gives up.
MAX_CAS_ROUNDS = 50
_SCAN_COUNT = 1000

#: One fenced change: the task id, and the record after the change (None when fenced out).
Step = tuple[str, Callable[[StatusRecord], StatusRecord | None]]


class RedisBackend(ResultBackend, Telemetry, Chords, FlowControl, Outbox):
    """Result backend on Redis (`redis://host:port/db`, `rediss://` with the tls section).

    Raises BackendError naming the masked URL on a malformed URL, refused credentials or a
    failed command, and BackendUnavailable when Redis cannot be reached.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._endpoint = Endpoint(self)
        self._redis = self._endpoint.connect()
        self._scripts = load_scripts(self._redis, "stemrun.backends", "redis.lua")
        self._written = RecentWrites()

    def _key(self, task_id: str) -> str:
        return redis_keys.status(self.namespace, task_id)

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any], what: str) -> Any:
        with self._endpoint.guard(what):
            return self._scripts[script](keys=keys, args=args)

    def create(self, records: Sequence[StatusRecord]) -> list[bool]:
        """Insert records with no live record under their id, in one script call.

        Raises BackendError on store failure or a value that is not JSON (nothing written).
        """
        if not records:
            return []
        now = self.clock.now()
        keys, rows = self.record_args(records, now)
        args = [repr(now), *(value for row in rows for value in row)]
        return [bool(x) for x in self._run("create", keys, args, "create status records")]

    def record_args(
        self, records: Sequence[StatusRecord], now: float
    ) -> tuple[list[str], list[list[Any]]]:
        """The status keys of `records` and, per record, its (json, expires_at, ttl_ms) as the
        create scripts take them (also the broker's, when it shares this Redis)."""
        rows = [[encode_record(r), *_expiry(r.expires_at, now)] for r in records]
        return [self._key(r.id) for r in records], rows

    def create_pending(
        self, records: Sequence[StatusRecord], messages: Sequence[bytes]
    ) -> list[bool]:
        """`create`, keeping each new record's message in the outbox, in one script call."""
        if not records:
            return []
        now = self.clock.now()
        keys, rows = self.record_args(records, now)
        args: list[Any] = [repr(now)]
        for record, row, message in zip(records, rows, messages, strict=True):
            args += [*row, record.id, message]
        created = self._run(
            "create_pending", [*keys, *self._outbox_keys()], args, "create status records"
        )
        return [bool(x) for x in created]

    def _outbox_keys(self) -> tuple[str, str]:
        return redis_keys.outbox(self.namespace), redis_keys.outbox_since(self.namespace)

    def pending(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The kept messages of these ids; raises BackendError."""
        if not task_ids:
            return {}
        with self._endpoint.guard("read the outbox"):
            found = self._redis.hmget(redis_keys.outbox(self.namespace), list(task_ids))
        return {i: m for i, m in zip(task_ids, found, strict=True) if isinstance(m, bytes)}

    def claim_pending(self, before: float, now: float, limit: int) -> dict[str, bytes]:
        """The oldest kept messages, restamped, in one script call; raises BackendError."""
        args = [repr(before), repr(now), limit]
        flat = self._run("claim_pending", self._outbox_keys(), args, "claim outbox messages")
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2) if flat[i + 1]}

    def clear_pending(self, task_ids: Sequence[str]) -> None:
        """Forget kept messages, atomically; raises BackendError."""
        if not task_ids:
            return
        outbox, since = self._outbox_keys()
        with self._endpoint.guard("clear the outbox"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(outbox, *task_ids)
            pipe.zrem(since, *task_ids)
            pipe.execute()

    def get(self, task_id: str) -> StatusRecord | None:
        """The record, or None when unknown or expired; raises BackendError."""
        return self._read([task_id], self.clock.now())[task_id][0]

    def _read(self, task_ids: Sequence[str], now: float) -> Current:
        """Live records and their versions, in one pipelined round trip."""
        with self._endpoint.guard("read status records"):
            pipe = self._redis.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hmget(self._key(task_id), "d", "x", "v")
            rows = pipe.execute()
        return _decoded(task_ids, rows, now)

    @property
    def status_prefix(self) -> str:
        """The key prefix of status records (a broker on this Redis reads them while fetching)."""
        return self._key("")

    def remember_read(self, rows: Mapping[str, Sequence[bytes | None]], now: float) -> None:
        """Keep records read elsewhere (their fields d, x, v, by id) for the next fenced write,
        which then needs no read of its own; a record changed since only costs a retry."""
        self._written.remember(_decoded(list(rows), list(rows.values()), now))

    def transition(self, changes: Sequence[Transition]) -> list[bool]:
        """Apply fenced transitions (compare-and-set, retried on contention).

        Raises BackendError on store failure, a value that is not JSON, or endless contention.
        """
        steps: list[Step] = [
            (c.task_id, functools.partial(apply_transition, change=c)) for c in changes
        ]
        return self._fenced(steps)

    def set_progress(
        self, task_id: str, attempt: int, fraction: float | None, meta: Mapping[str, Any]
    ) -> bool:
        """Record progress unless fenced out (terminal or older attempt); raises BackendError."""

        def apply(record: StatusRecord) -> StatusRecord | None:
            changes = {"progress": fraction, "progress_meta": dict(meta)}
            change = Transition(
                task_id=task_id, attempt=attempt, state=record.state, changes=changes
            )
            return apply_transition(record, change)

        return self._fenced([(task_id, apply)])[0]

    def _fenced(self, steps: Sequence[Step]) -> list[bool]:
        results = [False] * len(steps)
        todo = list(range(len(steps)))
        for _ in range(MAX_CAS_ROUNDS):
            if not todo:
                return results
            todo = self._fenced_round(steps, todo, results)
        if not todo:
            return results
        ids = sorted({steps[i][0] for i in todo})
        raise BackendError(
            f"{self._endpoint.where}: status records {', '.join(ids)} kept changing under "
            f"concurrent writers; gave up after {MAX_CAS_ROUNDS} tries"
        )

    def _fenced_round(
        self, steps: Sequence[Step], todo: list[int], results: list[bool]
    ) -> list[int]:
        """Apply the steps at `todo` once; returns the indexes to try again."""
        now = self.clock.now()
        current = self._current(list(dict.fromkeys(steps[i][0] for i in todo)), now)
        writes: list[tuple[int, str]] = []
        args: list[Any] = []
        for i in todo:
            task_id, apply = steps[i]
            record, version = current[task_id]
            updated = None if record is None else apply(record)
            results[i] = updated is not None
            if updated is None:
                continue
            args += [version, encode_record(updated), *_expiry(updated.expires_at, now)]
            writes.append((i, task_id))
            # Later steps on the same record build on this write, at the version it will have.
            current[task_id] = (updated, str(int(version) + 1))
        if not writes:
            return []
        keys = [self._key(task_id) for _, task_id in writes]
        reply = self._run("compare_and_set", keys, args, "update status records")
        missed: dict[str, int] = {}
        for (i, task_id), ok in zip(writes, reply, strict=True):
            if not ok and task_id not in missed:
                missed[task_id] = i
        self._written.remember(
            {task_id: current[task_id] for _, task_id in writes if task_id not in missed}
        )
        self._written.forget(missed)
        return [i for i in todo if i >= missed.get(steps[i][0], len(steps))]

    def _current(self, task_ids: list[str], now: float) -> Current:
        """Records and versions: this object's own recent writes, else one pipelined read."""
        current = self._written.recall(task_ids, now)
        unknown = [task_id for task_id in task_ids if task_id not in current]
        if unknown:
            current.update(self._read(unknown, now))
        return current

    def replace(self, record: StatusRecord) -> None:
        """Overwrite a record unconditionally; raises BackendError."""
        args = [encode_record(record), *_expiry(record.expires_at, self.clock.now())]
        self._run("replace", [self._key(record.id)], args, "replace a status record")

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove records in one command; raises BackendError."""
        if task_ids:
            with self._endpoint.guard("delete status records"):
                self._redis.delete(*(self._key(t) for t in task_ids))

    def put_worker(self, beat: Heartbeat, ttl_s: float) -> None:
        """Keep a heartbeat until `ttl_s` passes; raises BackendError."""
        now = self.clock.now()
        args = [beat.id, encode_heartbeat(beat, now), repr(now + ttl_s), repr(now)]
        self._run("put_worker", self._worker_keys(), args, "publish a worker heartbeat")

    def _worker_keys(self) -> list[str]:
        return [redis_keys.workers(self.namespace), redis_keys.worker_deadlines(self.namespace)]

    def workers(self) -> list[Heartbeat]:
        """Heartbeats of workers seen within their TTL, ordered by id; raises BackendError."""
        now = repr(self.clock.now())
        return decode_heartbeats(self._run("workers", self._worker_keys(), [now], "list workers"))

    def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat; raises BackendError."""
        beats, deadlines = self._worker_keys()
        with self._endpoint.guard("remove a worker heartbeat"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(beats, worker_id)
            pipe.zrem(deadlines, worker_id)
            pipe.execute()

    def purge_expired(self, now: float) -> int:
        """Delete records whose result TTL passed by `now`; returns how many.

        Redis expires records on its own shortly after their TTL; this catches the rest (it
        scans the namespace's status keys). Raises BackendError.
        """
        deleted = 0
        for keys in self._status_key_pages():
            deleted += int(self._run("purge_expired", keys, [repr(now)], "purge expired"))
        return deleted

    def _status_key_pages(self) -> Iterator[list[str]]:
        pattern = _glob_escape(self._key("")) + "*"
        cursor = 0
        while True:
            with self._endpoint.guard("scan status records"):
                cursor, keys = self._redis.scan(cursor, match=pattern, count=_SCAN_COUNT)
            if keys:
                yield [k.decode() if isinstance(k, bytes) else k for k in keys]
            if cursor == 0:
                return

    def chord_add(
        self, chord_id: str, index: int, result: Any, size: int, *, ttl_s: float = CHORD_TTL_S
    ) -> list[Any] | None:
        """Record a chord member's result; the ordered results once complete (see Chords).

        One script call: members completing at once serialise in Redis, so exactly one
        first-time add finds the chord complete. Raises ValueError (bad index, result not JSON)
        or BackendError.
        """
        check_chord_member(index, size)
        now = self.clock.now()
        ttl_ms = math.ceil(ttl_s * 1000) + EXPIRY_GRACE_MS
        text = json.dumps(result, allow_nan=False)
        args = [repr(now), index, text, size, repr(now + ttl_s), ttl_ms]
        key = redis_keys.chord(self.namespace, chord_id)
        found = self._run("chord_add", [key], args, "record a chord member")
        return None if found is None else [json.loads(item) for item in found]

    def ping(self) -> None:
        """PING the server; raises BackendError (BackendUnavailable when unreachable)."""
        with self._endpoint.guard("ping"):
            self._redis.ping()

    def close(self) -> None:
        """Close connections; raises nothing."""
        self._redis.close()

    def incr_counters(self, increments: Mapping[str, int]) -> None:
        """Add to named counters: HINCRBY each in one MULTI pipeline; raises BackendError."""
        if not increments:
            return
        key = redis_keys.counters(self.namespace)
        with self._endpoint.guard("add to counters"):
            pipe = self._redis.pipeline(transaction=True)
            for name, value in sorted(increments.items()):
                pipe.hincrby(key, name, int(value))
            pipe.execute()

    def counters(self) -> dict[str, int]:
        """Every counter's total; raises BackendError."""
        with self._endpoint.guard("read counters"):
            found = self._redis.hgetall(redis_keys.counters(self.namespace))
        return {_text(name): int(value) for name, value in found.items()}

    def cancel(
        self, task_id: str, now: float, *, result_ttl_s: float | None = None
    ) -> StatusRecord | None:
        """Cancel by compare-and-set (see `cancel_change`); the record after, None when unknown.

        Raises BackendError.
        """
        seen: dict[str, StatusRecord | None] = {}

        def apply(record: StatusRecord) -> StatusRecord | None:
            # Called again with the fresh record when another writer got in between.
            seen["before"] = record
            seen["after"] = cancel_change(record, now, result_ttl_s)
            return seen["after"]

        self._fenced([(task_id, apply)])
        return seen.get("after") or seen.get("before")

    def get_many(self, task_ids: Sequence[str]) -> dict[str, StatusRecord]:
        """The live records among `task_ids`, in one pipelined round trip; raises BackendError."""
        current = self._read(list(dict.fromkeys(task_ids)), self.clock.now())
        return {task_id: record for task_id, (record, _) in current.items() if record is not None}

    def reserve_rate_slot(self, limits: Mapping[str, float], now: float) -> float:
        """Reserve one start under every limiter (see FlowControl), in one script.

        Raises BackendError.
        """
        keys = [redis_keys.rate_limiter(self.namespace, key) for key in limits]
        args = [repr(now), *(repr(interval) for interval in limits.values())]
        return float(self._run("reserve_rate_slot", keys, args, "reserve a rate limit slot"))

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None:
        """Take `key` for `task_id` unless a live claim holds it (see FlowControl); one script.

        Raises BackendError.
        """
        ttl_ms = max(1, math.ceil(ttl_s * 1000)) + EXPIRY_GRACE_MS
        args = [task_id, repr(now), repr(now + ttl_s), str(ttl_ms)]
        keys = [redis_keys.unique(self.namespace, key)]
        holder = self._run("claim_unique", keys, args, "claim a unique key")
        return None if holder is None else _text(holder)

    def release_unique(self, key: str, task_id: str) -> bool:
        """Drop `key` if `task_id` holds it; raises BackendError."""
        keys = [redis_keys.unique(self.namespace, key)]
        return bool(self._run("release_unique", keys, [task_id], "release a unique key"))

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume `queue`; raises BackendError."""
        key = redis_keys.paused(self.namespace)
        with self._endpoint.guard("pause a queue" if paused else "resume a queue"):
            (self._redis.sadd if paused else self._redis.srem)(key, queue)

    def paused_queues(self) -> set[str]:
        """The paused queues; raises BackendError."""
        with self._endpoint.guard("list paused queues"):
            found = self._redis.smembers(redis_keys.paused(self.namespace))
        return {_text(queue) for queue in found}


def _expiry(expires_at: float | None, now: float) -> tuple[str, str]:
    """The stored expiry and the key's TTL in ms ('' and '' for a record kept forever)."""
    if expires_at is None:
        return "", ""
    ttl_ms = max(1, math.ceil((expires_at - now) * 1000)) + EXPIRY_GRACE_MS
    return repr(expires_at), str(ttl_ms)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decoded(task_ids: Sequence[str], rows: Sequence[Sequence[Any]], now: float) -> Current:
    """Records and versions from their fields d, x, v (None or b'' for a missing field)."""
    current: Current = {}
    for task_id, (data, expires_at, version) in zip(task_ids, rows, strict=True):
        if not data or (expires_at and float(expires_at) < now):
            current[task_id] = (None, "")
        else:
            current[task_id] = (decode_record(data), version.decode())
    return current
