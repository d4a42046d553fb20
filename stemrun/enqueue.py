"""What one enqueue call becomes: its options resolved into an envelope, a queued record, a message.

Pure: nothing here touches a store, so `Stem` validates a whole batch before writing any of it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stemrun.backends.record import StatusRecord
from stemrun.brokers.base import Message
from stemrun.config.model import Config, TaskConfig
from stemrun.config.size import format_size
from stemrun.envelope import Envelope, Signer, encode
from stemrun.errors import PayloadTooLarge, UnknownQueue, UsageError
from stemrun.state import TaskState

When = float | datetime  # epoch seconds or an aware datetime

#: What a stored message may grow by after its enqueue: the attempt, due time and rate-limit
#: slot a retry, replay or rate limit rewrites. A worker allows it on top of every limit.
DELIVERY_ALLOWANCE = 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueOptions:
    """Per-call options of an enqueue; None means the task's configured default."""

    headers: Mapping[str, Any] | None = None
    queue: str | None = None
    priority: int | None = None
    countdown: float | None = None
    eta: When | None = None
    expires: float | When | None = None
    task_id: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    canvas: Mapping[str, Any] | None = None  # set by stemrun.canvas: what follows this task


#: One item of `Stem.enqueue_many`: task name, args and optionally its options.
Item = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], EnqueueOptions]


def options_of(item: Item) -> EnqueueOptions:
    """The item's options, or the defaults when it has none."""
    return item[2] if len(item) == 3 else EnqueueOptions()


def build_envelope(
    config: Config,
    task: str,
    spec: TaskConfig,
    args: Mapping[str, Any],
    options: EnqueueOptions,
    now: float,
) -> Envelope:
    """The envelope of one call to `task`: call options first, then its config `spec`.

    Raises UnknownQueue for an undeclared queue, UsageError for a bad priority, time or args.
    """
    queue = options.queue or spec.queue
    check_queue(config, queue)
    priority = spec.priority if options.priority is None else options.priority
    if not 0 <= priority <= 9:
        raise UsageError(f"priority must be between 0 and 9, got {priority}")
    expires = options.expires if options.expires is not None else spec.expires_s
    return Envelope(
        id=options.task_id or uuid.uuid4().hex,
        task=task,
        queue=queue,
        args=_json_object(args, "args"),
        headers=_json_object(options.headers or {}, "headers"),
        priority=priority,
        created_at=now,
        expires_at=_deadline(expires, now),
        parent_id=options.parent_id,
        root_id=options.root_id,
        canvas=None if options.canvas is None else dict(options.canvas),
        eta=_eta(options.countdown, options.eta, now),
    )


def check_queue(config: Config, queue: str) -> None:
    """Raises UnknownQueue when stem.yaml does not declare `queue`."""
    declared = set(config.queues) | {config.default_queue}
    if queue not in declared:
        known = ", ".join(sorted(declared))
        raise UnknownQueue(f"queue {queue!r} is not declared in stem.yaml (declared: {known})")


def queued_record(env: Envelope) -> StatusRecord:
    """The status record written before the envelope is published."""
    return StatusRecord(
        id=env.id,
        task=env.task,
        state=TaskState.QUEUED,
        queue=env.queue,
        args=env.args,
        created_at=env.created_at,
        parent_id=env.parent_id,
        root_id=env.root_id,
        meta={"headers": env.headers} if env.headers else {},
    )


def message_of(env: Envelope, signer: Signer | None, *, max_payload: int) -> Message:
    """The envelope encoded (and signed) for the broker, at most `max_payload` bytes.

    Every enqueue passes here, so this is where the payload limit holds (docs/configuration.md).
    Raises UsageError when its args or headers are not JSON-serialisable, PayloadTooLarge when
    the encoded message is larger than `max_payload`.
    """
    try:
        body = encode(env, signer)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"args and headers of task {env.task!r} must be JSON-serialisable: {exc}"
        ) from exc
    if len(body) > max_payload:
        raise _too_large(env.task, len(body), max_payload)
    return Message(id=env.id, queue=env.queue, body=body, priority=env.priority, eta=env.eta)


def _too_large(task: str, size: int, limit: int) -> PayloadTooLarge:
    message = (
        f"task {task!r}: its message encodes to {format_size(size)} ({size} bytes), over its "
        f"limit of {format_size(limit)} (limits.max_payload); pass large data by reference "
        f"(a path, URL or object key), or raise tasks.{task}.limits.max_payload in stem.yaml"
    )
    return PayloadTooLarge(message, task=task, size=size, limit=limit)


def oversized(body: bytes, config: Config) -> str | None:
    """Why a stored message is too large for every task of `config`; None when it may fit one.

    Measured on the raw bytes, so a worker can refuse a message before parsing any of it.
    """
    ceiling = config.largest_max_payload()
    if len(body) <= ceiling + DELIVERY_ALLOWANCE:
        return None
    return (
        f"the message is {format_size(len(body))} ({len(body)} bytes), larger than the "
        f"largest limits.max_payload of any task ({format_size(ceiling)}); it was not decoded"
    )


def _json_object(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    # Only the shape is checked here; `message_of` proves JSON-serialisability by encoding.
    if not isinstance(value, Mapping):
        raise UsageError(f"{what} must be a JSON object (a mapping), got {type(value).__name__}")
    return dict(value)


def _epoch(when: When) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise UsageError(f"datetime {when.isoformat()} needs a timezone (UTC offset)")
        return when.timestamp()
    return float(when)


def _eta(countdown: float | None, eta: When | None, now: float) -> float | None:
    if countdown is not None and eta is not None:
        raise UsageError("give either countdown or eta, not both")
    if countdown is not None:
        if countdown < 0:
            raise UsageError(f"countdown must not be negative, got {countdown}")
        return now + countdown if countdown > 0 else None
    return None if eta is None else _epoch(eta)


def _deadline(expires: float | When | None, now: float) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return _epoch(expires)
    return now + float(expires)
