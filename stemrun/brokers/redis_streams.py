"""The Redis Streams broker: one stream per queue and priority, leases fenced by receipts.

Every operation that reads and changes state is one Lua script (`redis_streams.lua`, whose
header describes the data model), so it is atomic and one round trip: publishing a batch,
fetching across queues and priorities (moving due delayed messages, reclaiming lapsed leases,
reading new entries with XREADGROUP), renewing, acknowledging, requeueing and dead-lettering.

An idle fetch waits on the queues' wake-up lists with BLPOP: publish, requeue and replay push a
token, so a blocked worker wakes within a round trip of new work. The wait is cut into short
steps (and to the next eta or lease deadline) because time may also make work due.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Unpack

from redis.commands.core import Script

from stemrun import redis_keys
from stemrun.brokers.base import (
    Broker,
    DeadLetter,
    DeadLetterAdmin,
    Delivery,
    Message,
    QueueMonitor,
    QueueStats,
)
from stemrun.errors import BrokerError
from stemrun.redis_client import Endpoint, load_scripts
from stemrun.store_base import StoreOptions

#: Longest single BLPOP of a blocking fetch; also how often a waiter rechecks the clock.
WAKE_POLL_S = 0.1
#: Shortest wait worth a BLPOP (its timeout 0 would mean forever).
MIN_WAIT_S = 0.002
PRIORITIES = range(10)
#: The peeked hash fields of a delivery (empty when nothing was peeked).
Peeked = tuple[bytes, ...]
_PURGE_BATCH = 1000


class RedisStreamsBroker(Broker, DeadLetterAdmin, QueueMonitor):
    """Broker on Redis Streams (`redis://host:port/db`, `rediss://` with the tls section).

    Raises BrokerError naming the masked URL on a malformed URL, refused credentials or a failed
    command, and BrokerUnavailable when Redis cannot be reached.
    """

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._endpoint = Endpoint(self)
        self._redis = self._endpoint.connect()
        self._scripts = load_scripts(self._redis, "stemrun.brokers", "redis_streams.lua")
        self._consumed: dict[str, set[str]] = {}  # consumer -> queues, forgotten on close

    def _run(self, script: str, args: Sequence[Any], what: str) -> Any:
        return self.run_script(self._scripts[script], (), args, what)

    def publish(self, messages: Sequence[Message]) -> None:
        """Publish the batch in one script call; raises BrokerError."""
        if not messages:
            return
        args: list[Any] = [repr(self.clock.now())]
        for row in self.message_args(messages):
            args += row
        self._run("publish", args, "publish")

    def message_args(self, messages: Sequence[Message]) -> list[list[Any]]:
        """Per message, its (queue, priority, id, body, eta) as the publish script takes them.

        Raises BrokerError for a priority outside 0..9.
        """
        return [[m.queue, self._priority(m.priority), m.id, m.body, _eta(m.eta)] for m in messages]

    def register(self, source: str) -> Script:
        """A script on this broker's connection (a result backend sharing this Redis writes
        records and messages in one call with it)."""
        return self._redis.register_script(source)

    def run_script(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], what: str
    ) -> Any:
        """Run `script` with the namespace as its first argument; raises BrokerError."""
        with self._endpoint.guard(what):
            return script(keys=keys, args=[self.namespace, *args])

    def _priority(self, priority: int) -> int:
        if priority not in PRIORITIES:
            raise BrokerError(f"{self._endpoint.where}: priority {priority} is not in 0..9")
        return priority

    def fetch(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        consumer: str,
        lease_s: float,
        block_s: float = 0.0,
        ack: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Acknowledge `ack`, then lease up to `limit` due messages, in one script call; waits
        up to `block_s`. Raises BrokerError."""
        found = self.fetch_peeking(
            queues, limit, consumer=consumer, lease_s=lease_s, block_s=block_s, ack=ack
        )
        return [delivery for delivery, _ in found]

    def fetch_peeking(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        consumer: str,
        lease_s: float,
        block_s: float = 0.0,
        ack: Sequence[Delivery] = (),
        peek: str = "",
    ) -> list[tuple[Delivery, Peeked]]:
        """`fetch`, also reading the fields d, x and v of the hash `{peek}{id}` of each delivery
        in the same script call (a result backend sharing this Redis reads its records so)."""
        if limit <= 0 or not queues:
            self.ack(ack)
            return []
        self._consumed.setdefault(consumer, set()).update(queues)
        deadline = time.monotonic() + block_s
        while True:
            found, next_due = self._lease(queues, limit, consumer, lease_s, ack, peek)
            ack = ()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            wait = min(remaining, WAKE_POLL_S)
            if next_due is not None:
                wait = min(wait, next_due - self.clock.now())
            self._wait_for_work(queues, wait)

    def _lease(
        self,
        queues: Sequence[str],
        limit: int,
        consumer: str,
        lease_s: float,
        ack: Sequence[Delivery],
        peek: str,
    ) -> tuple[list[tuple[Delivery, Peeked]], float | None]:
        now = self.clock.now()
        args: list[Any] = [repr(now), repr(now + lease_s), limit, consumer, peek, len(ack)]
        for d in ack:
            args += [d.queue, _member(d)]
        args += queues
        reply = self._run("fetch", args, "fetch")
        step = 7 if peek else 4
        found = [
            (
                _delivery(reply[i].decode(), reply[i + 1].decode(), reply[i + 2], reply[i + 3]),
                tuple(reply[i + 4 : i + step]),
            )
            for i in range(1, len(reply), step)
        ]
        return found, float(reply[0]) if reply[0] else None

    def _wait_for_work(self, queues: Sequence[str], wait: float) -> None:
        """BLPOP the queues' wake-up lists for up to `wait` seconds (or just pause briefly)."""
        if wait < MIN_WAIT_S:
            time.sleep(max(wait, 0.0))
            return
        keys = [redis_keys.wake(self.namespace, q) for q in queues]
        with self._endpoint.guard("wait for work"):
            self._redis.blpop(keys, timeout=wait)

    def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[bool]:
        """Renew leases still held under their receipts, in one call; raises BrokerError."""
        if not deliveries:
            return []
        args: list[Any] = [repr(self.clock.now() + lease_s)]
        for d in deliveries:
            args += [d.queue, _member(d)]
        return [bool(x) for x in self._run("extend", args, "extend leases")]

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Delete finished entries (XACK + XDEL) still held, in one call; raises BrokerError."""
        if not deliveries:
            return []
        args: list[Any] = []
        for d in deliveries:
            args += [d.queue, _member(d)]
        return [bool(x) for x in self._run("ack", args, "ack")]

    def requeue(self, delivery: Delivery, body: bytes, eta: float | None) -> bool:
        """Replace a leased entry by `body` due at `eta`, atomically; raises BrokerError."""
        args = [repr(self.clock.now()), delivery.queue, _member(delivery), delivery.id, body]
        return bool(self._run("requeue", [*args, _eta(eta)], "requeue"))

    def dead_letter(self, delivery: Delivery, entry: DeadLetter) -> bool:
        """Move a leased entry to its queue's dead letters, atomically; raises BrokerError."""
        try:
            error = "" if entry.error is None else json.dumps(entry.error)
        except (TypeError, ValueError) as exc:
            raise BrokerError(f"dead letter {entry.id}: its error is not JSON ({exc})") from exc
        args = [
            delivery.queue,
            _member(delivery),
            entry.id,
            entry.reason,
            entry.task or "",
            entry.attempt,
            repr(entry.dead_at),
            error,
            entry.body,
        ]
        return bool(self._run("dead_letter", args, "dead-letter"))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first; raises BrokerError."""
        if limit <= 0:
            return []
        reply = self._run("dead_letters", [queue or "", limit], "list dead letters")
        return [
            _dead_letter(task_id.decode(), dict(zip(flat[::2], flat[1::2], strict=True)))
            for task_id, flat in zip(reply[::2], reply[1::2], strict=True)
        ]

    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        """One dead letter by task id; raises BrokerError."""
        with self._endpoint.guard("read a dead letter"):
            fields: dict[bytes, bytes] = self._redis.hgetall(  # type: ignore[assignment]
                redis_keys.dead_letter(self.namespace, task_id)
            )
        return _dead_letter(task_id, fields) if fields else None

    def replay(self, task_id: str, body: bytes, eta: float | None) -> bool:
        """Swap a dead letter for a new message atomically; False if absent; raises BrokerError."""
        args = [repr(self.clock.now()), task_id, body, _eta(eta)]
        return bool(self._run("replay", args, "replay"))

    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters of one queue or all, in batches; raises BrokerError."""
        total = 0
        while True:
            done = int(self._run("purge_dead_letters", [queue or "", _PURGE_BATCH], "purge"))
            total += done
            if done < _PURGE_BATCH:
                return total

    def delete_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete the dead letters with these ids in one script call; raises BrokerError."""
        if not task_ids:
            return 0
        return int(self._run("delete_dead_letters", list(task_ids), "delete dead letters"))

    def stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Pending, delayed, in-flight and dead counts per queue; raises BrokerError."""
        if not queues:
            return {}
        reply = self._run("stats", [repr(self.clock.now()), *queues], "queue stats")
        return {
            queue: QueueStats(pending=row[0], delayed=row[1], in_flight=row[2], dead=row[3])
            for queue, row in zip(queues, reply, strict=True)
        }

    def ping(self) -> None:
        """PING the server; raises BrokerError (BrokerUnavailable when unreachable)."""
        with self._endpoint.guard("ping"):
            self._redis.ping()

    def close(self) -> None:
        """Forget this process's idle consumers, then close connections; raises nothing."""
        for consumer, queues in self._consumed.items():
            try:
                self._run("forget_consumer", [consumer, *sorted(queues)], "forget consumer")
            except BrokerError:
                break  # the server is gone; its groups will be rebuilt anyway
        self._consumed.clear()
        self._redis.close()


def _eta(eta: float | None) -> str:
    return "" if eta is None else repr(eta)


def _member(delivery: Delivery) -> str:
    """The leases-set member of a delivery: its receipt up to the queue name."""
    return delivery.receipt.partition("@")[0]


def _delivery(queue: str, member: str, task_id: bytes, body: bytes) -> Delivery:
    # The receipt is the leases member plus the queue, so receipts are unique across queues.
    return Delivery(
        id=task_id.decode(),
        queue=queue,
        body=body,
        priority=int(member[0]),
        receipt=f"{member}@{queue}",
        deliveries=int(member.rsplit("/", 1)[1]),
    )


def _dead_letter(task_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    error = fields.get(b"error", b"")
    return DeadLetter(
        id=task_id,
        queue=fields[b"queue"].decode(),
        body=fields[b"body"],
        reason=fields[b"reason"].decode(),
        task=fields.get(b"task", b"").decode() or None,
        attempt=int(fields[b"attempt"]),
        dead_at=float(fields[b"dead_at"]),
        error=json.loads(error) if error else None,
    )
