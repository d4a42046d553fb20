"""Enqueue as one step: records and their messages written so that no crash leaves half of it.

When the broker and the result backend are one store, both are one write (stemrun.shared_store).
Otherwise a producer writes each new status record together with its message kept in the
backend's outbox (one transaction), publishes the messages, then forgets them from the outbox.
Whatever dies in between (the producer, the broker, the backend), one of these holds:

- nothing was written, and the call raised;
- the publish failed and the records were removed again: the call raised the publish error;
- the records and their kept messages are stored: a worker's sweep publishes every message kept
  longer than `GRACE_S` whose record is still `queued`, so the task runs. A retry of the call
  with the same task id finds the record and returns the id without publishing a second copy.

A kept message is only published again when its producer never came back to forget it, so a
duplicate delivery needs a backend failure right after a successful publish; the worker then
skips or fences the copy like any redelivery (see docs/guarantees.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from stemrun.backends.base import Outbox, ResultBackend
from stemrun.backends.record import StatusRecord
from stemrun.brokers.base import Broker, Message
from stemrun.errors import StemrunError
from stemrun.shared_store import single_write
from stemrun.state import TaskState
from stemrun.store_base import require

log = logging.getLogger("stemrun.outbox")

#: A message kept this long was abandoned by its producer; a sweep publishes it.
GRACE_S = 30.0
#: How often a worker sweeps the outbox.
SWEEP_EVERY_S = 5.0
#: Messages one sweep publishes at most.
SWEEP_LIMIT = 500
#: Test hook run between writing the records and publishing: fault-injection tests place a crash
#: at this exact point. Production code never sets it.
after_record: Callable[[], None] | None = None


class Enqueuer:
    """Creates records and publishes their messages, as one write when the stores are one."""

    def __init__(self, broker: Broker, backend: ResultBackend) -> None:
        self._broker = broker
        self._backend = backend
        self._single_write = single_write(broker, backend)

    def __call__(self, records: Sequence[StatusRecord], messages: Sequence[Message]) -> list[bool]:
        """Create `records`; publish `messages[i]` for each record that is new; True where new.

        Raises the BrokerError / BackendError that broke the enqueue, never a clean-up error.
        """
        if self._single_write is not None:
            return self._single_write(records, messages)
        return record_and_publish(self._broker, self._backend, records, messages)


def record_and_publish(
    broker: Broker,
    backend: ResultBackend,
    records: Sequence[StatusRecord],
    messages: Sequence[Message],
) -> list[bool]:
    """Create `records` with their messages kept in the outbox, publish the new ones, forget
    them; True where new. Raises the error that broke the enqueue, never a clean-up error."""
    outbox = require(backend, Outbox)
    created = outbox.create_pending(records, [pack(m) for m in messages])
    fresh = [m for m, new in zip(messages, created, strict=True) if new]
    if not fresh:
        return created
    ids = [m.id for m in fresh]
    try:
        if after_record is not None:
            after_record()
        broker.publish(fresh)
    except BaseException:
        _undo(backend, outbox, ids)
        raise
    _forget(outbox, ids)
    return created


def _undo(backend: ResultBackend, outbox: Outbox, ids: list[str]) -> None:
    """Remove the records of a failed publish; if that fails too, a sweep publishes them."""
    try:
        backend.delete(ids)
        outbox.clear_pending(ids)
    except StemrunError as exc:
        log.warning("could not undo %d records after a failed publish: %s", len(ids), exc)


def _forget(outbox: Outbox, ids: list[str]) -> None:
    """The broker has the messages; a failure here only risks a duplicate copy later."""
    try:
        outbox.clear_pending(ids)
    except StemrunError as exc:
        log.warning("published %d tasks but could not clear the outbox: %s", len(ids), exc)


def sweep(broker: Broker, backend: ResultBackend, now: float) -> int:
    """Publish the messages their producers abandoned; returns how many were published.

    Raises BrokerError / BackendError (the claimed messages are kept and claimed again later).
    """
    outbox = require(backend, Outbox)
    claimed = outbox.claim_pending(now - GRACE_S, now, SWEEP_LIMIT)
    if not claimed:
        return 0
    records = backend.get_many(list(claimed))
    orphans = [
        unpack(task_id, kept)
        for task_id, kept in claimed.items()
        if task_id in records and records[task_id].state == TaskState.QUEUED
    ]
    broker.publish(orphans)
    outbox.clear_pending(list(claimed))
    if orphans:
        log.warning("published %d tasks whose producer stopped before publishing", len(orphans))
    return len(orphans)


class Sweeper:
    """Sweep the outbox every `SWEEP_EVERY_S` (a worker calls `maybe` on every iteration)."""

    def __init__(self, broker: Broker, backend: ResultBackend) -> None:
        self._broker = broker
        self._backend = backend
        self._next = 0.0

    def maybe(self, now: float) -> None:
        """Sweep when due. Raises BrokerError / BackendError."""
        if now < self._next:
            return
        self._next = now + SWEEP_EVERY_S
        sweep(self._broker, self._backend, now)


def pack(message: Message) -> bytes:
    """A message as the outbox keeps it: a JSON header line, then the body."""
    header = {"queue": message.queue, "priority": message.priority, "eta": message.eta}
    return json.dumps(header).encode() + b"\n" + message.body


def unpack(task_id: str, kept: bytes) -> Message:
    """The message `pack` kept."""
    header, _, body = kept.partition(b"\n")
    fields = json.loads(header)
    return Message(
        id=task_id,
        queue=fields["queue"],
        body=body,
        priority=fields["priority"],
        eta=fields["eta"],
    )
