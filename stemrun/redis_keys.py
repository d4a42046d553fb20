"""Every Redis key stemrun uses, in one place.

Each key starts with the namespace (stem.yaml `namespace`), so several apps share one Redis and a
test can delete exactly its own keys. The Lua files list the same templates in their headers
(`stemrun/brokers/redis_streams.lua`, `stemrun/backends/redis.lua`,
`stemrun/schedules/redis.lua`); a test checks they match.
Queue names and task ids are used verbatim: a template's last field may contain ':'.
"""

from __future__ import annotations

#: The consumer group of every queue stream (one group per stream; consumers are worker names).
GROUP = "stemrun"

#: Broker keys: template -> what it holds.
BROKER_KEYS: dict[str, str] = {
    "{ns}:stream:{queue}:{priority}": (
        "stream of one queue at one priority (0..9); entry fields `id` (task id) and `body`; an "
        "entry lives until it is acknowledged (XACK + XDEL), requeued or dead-lettered"
    ),
    "{ns}:leases:{queue}": (
        "sorted set of the queue's leased entries: member `{priority}/{entry id}/{deliveries}` "
        "(the receipt), score the lease deadline (epoch seconds)"
    ),
    "{ns}:delayed:{queue}": (
        "sorted set of messages not due yet: member msgpack(seq, priority, id, body), score "
        "the eta; moved to their stream by the fetch script once due"
    ),
    "{ns}:wake:{queue}": (
        "list of wake-up tokens (at most 16) pushed by publish, requeue and replay; an idle "
        "fetch waits on it with BLPOP"
    ),
    "{ns}:sequence": "counter making delayed members unique",
    "{ns}:dead_letter:{id}": (
        "hash of one dead letter: queue, priority, body, reason, task, attempt, dead_at, error"
    ),
    "{ns}:dead_letters": "sorted set of every dead letter's task id, score dead_at",
    "{ns}:dead_letters:{queue}": "sorted set of one queue's dead letter ids, score dead_at",
}

#: Result backend keys: template -> what it holds.
BACKEND_KEYS: dict[str, str] = {
    "{ns}:status:{id}": (
        "hash of one status record: `d` the record as JSON (backends/codec.py), `x` its "
        "expires_at ('' for none), `v` a version bumped by every write (compare-and-set); "
        "Redis expires the key about a second after `x`"
    ),
    "{ns}:workers": "hash of worker heartbeats: worker id -> heartbeat JSON",
    "{ns}:worker_deadlines": "sorted set: worker id -> when its heartbeat expires",
    "{ns}:chord:{id}": (
        "hash of one chord (or group) counter: `m{index}` a member's result JSON, `x` the "
        "expires_at of the counter (caller's clock); Redis expires the key a second later"
    ),
    "{ns}:counters": (
        "hash of task counters (names from stemrun.telemetry): counter name -> total (HINCRBY)"
    ),
    "{ns}:rate:{key}": (
        "string: one rate limiter's next free start slot (epoch seconds, caller's clock); Redis "
        "expires it a second after that slot"
    ),
    "{ns}:unique:{key}": (
        "hash of one unique key's claim: `h` the holder's task id, `x` its expires_at (caller's "
        "clock); Redis expires the key a second later"
    ),
    "{ns}:paused": "set of the paused queue names",
    "{ns}:outbox": "hash: task id -> a message kept until its broker has it (backends/base.Outbox)",
    "{ns}:outbox_since": "sorted set: task id -> when its outbox message was kept or last claimed",
}


def stream(ns: str, queue: str, priority: int) -> str:
    """The stream of `queue` at `priority`."""
    return f"{ns}:stream:{queue}:{priority}"


def leases(ns: str, queue: str) -> str:
    """The leased entries of `queue`."""
    return f"{ns}:leases:{queue}"


def delayed(ns: str, queue: str) -> str:
    """The messages of `queue` not due yet."""
    return f"{ns}:delayed:{queue}"


def wake(ns: str, queue: str) -> str:
    """The wake-up list of `queue`."""
    return f"{ns}:wake:{queue}"


def sequence(ns: str) -> str:
    """The counter of delayed members."""
    return f"{ns}:sequence"


def dead_letter(ns: str, task_id: str) -> str:
    """One dead letter."""
    return f"{ns}:dead_letter:{task_id}"


def dead_letters(ns: str, queue: str | None = None) -> str:
    """The dead-letter index of one queue, or of all queues."""
    return f"{ns}:dead_letters" if queue is None else f"{ns}:dead_letters:{queue}"


def status(ns: str, task_id: str) -> str:
    """One status record."""
    return f"{ns}:status:{task_id}"


def workers(ns: str) -> str:
    """The worker heartbeats."""
    return f"{ns}:workers"


def worker_deadlines(ns: str) -> str:
    """When each worker heartbeat expires."""
    return f"{ns}:worker_deadlines"


def chord(ns: str, chord_id: str) -> str:
    """The member results of one chord (or group)."""
    return f"{ns}:chord:{chord_id}"


def counters(ns: str) -> str:
    """The task counters every worker adds to."""
    return f"{ns}:counters"


def rate_limiter(ns: str, key: str) -> str:
    """One rate limiter's next free slot."""
    return f"{ns}:rate:{key}"


def unique(ns: str, key: str) -> str:
    """One unique key's claim."""
    return f"{ns}:unique:{key}"


def paused(ns: str) -> str:
    """The paused queues."""
    return f"{ns}:paused"


def outbox(ns: str) -> str:
    """Messages kept until their broker has them."""
    return f"{ns}:outbox"


def outbox_since(ns: str) -> str:
    """When each outbox message was kept or last claimed."""
    return f"{ns}:outbox_since"


#: Schedule store keys (stemrun/schedules/redis.py, redis.lua): template -> what it holds.
SCHEDULE_KEYS: dict[str, str] = {
    "{ns}:schedule:{name}": "hash of one schedule entry: `d` the entry as JSON, `v` its version",
    "{ns}:schedules": "sorted set of every entry name (score 0: listed by name)",
    "{ns}:schedules_due": "sorted set of enabled, armed entries: name -> next_run_at",
    "{ns}:lease:{name}": "hash of one lease (`beat`): `o` owner, `x` expires_at (caller's clock)",
}


def schedule(ns: str, name: str) -> str:
    """One schedule entry."""
    return f"{ns}:schedule:{name}"


def schedules(ns: str) -> str:
    """The names of every schedule entry."""
    return f"{ns}:schedules"


def schedules_due(ns: str) -> str:
    """The armed schedule entries by next run time."""
    return f"{ns}:schedules_due"


def lease(ns: str, name: str) -> str:
    """One lease, e.g. the beat leader lease."""
    return f"{ns}:lease:{name}"
