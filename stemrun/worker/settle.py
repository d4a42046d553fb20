"""Turn attempt outcomes (and rejected deliveries) into store writes, then write them in batches.

Order per batch, for at-least-once delivery: every status transition first (one backend call),
then the broker moves (retries requeued, give-ups dead-lettered), then one ack for the rest. A
crash anywhere leaves the message leased and it is delivered again. Every transition carries its
delivery's receipt: a write the store fences out (another delivery took the attempt over, or it
already finished) is not followed by any move, continuation or count, only by an ack that the
broker ignores unless the message is done (see stemrun.backends.record).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stemrun.backends.base import ResultBackend
from stemrun.backends.record import Transition
from stemrun.brokers.base import Broker, DeadLetter, Delivery
from stemrun.config.model import TaskConfig
from stemrun.envelope import Envelope, with_delivery
from stemrun.retry import decide, retryable
from stemrun.state import DeadLetterReason, TaskState
from stemrun.worker.execute import Outcome

Action = Literal["ack", "requeue", "dead_letter"]
#: The word logged for each settlement.
Event = Literal[
    "succeeded", "retried", "failed", "dead-lettered", "cancelled", "skipped", "delayed", "ignored"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """What to write for one delivery."""

    delivery: Delivery
    action: Action
    event: Event
    transition: Transition | None = None
    body: bytes | None = None  # requeue: the next attempt's envelope
    eta: float | None = None  # requeue: when it is due
    dead: DeadLetter | None = None
    task: str | None = None
    attempt: int = 0
    detail: str = ""
    envelope: Envelope | None = None  # when decoded: canvas steps continue after their write


def apply(
    backend: ResultBackend,
    broker: Broker,
    batch: Sequence[Settlement],
    then: Callable[[Sequence[Settlement]], None] | None = None,
    *,
    also: Sequence[Transition] = (),
    deferred_acks: list[Delivery] | None = None,
) -> tuple[list[Settlement], list[bool]]:
    """Write a batch: transitions, `then(written)`, requeues and dead letters, then acks.

    `then` runs canvas continuations once the terminal states are durable and before any ack.
    `also` are transitions written in the same backend call (the worker's next `running`
    writes: one round trip for both). With `deferred_acks`, the acks are appended there instead
    of sent: the worker sends them with its next fetch (an ack only removes a message whose
    outcome is already durable, so sending it later is safe). Returns the batch as written (a
    settlement whose transition was fenced out became an `ignored` ack) and whether each of
    `also` was accepted.

    Raises BackendError / BrokerError; the caller may apply the same batch again (every write is
    fenced or keyed by the delivery's receipt, so repeating it changes nothing twice).
    """
    written, also_accepted = _write_transitions(backend, batch, also)
    if then is not None:
        then(written)
    for item in written:
        if item.action == "requeue":
            broker.requeue(item.delivery, item.body or item.delivery.body, item.eta)
        elif item.action == "dead_letter" and item.dead is not None:
            broker.dead_letter(item.delivery, item.dead)
    acks = [item.delivery for item in written if item.action == "ack"]
    if deferred_acks is not None:
        deferred_acks.extend(acks)
    elif acks:
        broker.ack(acks)
    return written, also_accepted


def _write_transitions(
    backend: ResultBackend, batch: Sequence[Settlement], also: Sequence[Transition]
) -> tuple[list[Settlement], list[bool]]:
    changing = [item for item in batch if item.transition is not None]
    if not changing and not also:
        return list(batch), []
    changes = [item.transition for item in changing if item.transition]
    results = backend.transition([*changes, *also])
    accepted, also_accepted = results[: len(changes)], results[len(changes) :]
    # A rejected delivery goes to the dead letters whether or not it has a record to fail.
    fenced = {
        id(item)
        for item, ok in zip(changing, accepted, strict=True)
        if not ok and item.event != "dead-lettered"
    }
    return [_ignored(item) if id(item) in fenced else item for item in batch], also_accepted


def _ignored(item: Settlement) -> Settlement:
    detail = "result ignored: the attempt was taken over by another worker or already finished"
    return dataclasses.replace(
        item, action="ack", event="ignored", transition=None, envelope=None, detail=detail
    )


def succeeded(
    delivery: Delivery, envelope: Envelope, task: TaskConfig, outcome: Outcome, now: float
) -> Settlement:
    """Store the result and ack."""
    changes = {"result": outcome.result, "finished_at": now, "expires_at": now + task.result_ttl_s}
    return Settlement(
        delivery=delivery,
        action="ack",
        event="succeeded",
        transition=Transition(
            task_id=envelope.id,
            attempt=envelope.attempt,
            state=TaskState.SUCCEEDED,
            changes=changes,
            receipt=delivery.receipt,
        ),
        task=envelope.task,
        attempt=envelope.attempt,
        detail=f"in {outcome.runtime_s:.3f}s",
        envelope=envelope,
    )


def unsuccessful(
    delivery: Delivery,
    envelope: Envelope,
    task: TaskConfig,
    outcome: Outcome,
    now: float,
    rng: random.Random,
) -> Settlement:
    """Retry per the task's policy, or give up: status failed and a dead letter."""
    requested = outcome.countdown_s
    if outcome.eta is not None:
        requested = outcome.eta - now
    delay = decide(
        task,
        envelope.attempt,
        outcome.exc_types,
        rng,
        requested_s=requested,
        forced=outcome.status == "retry",
    )
    error = outcome.error or {"type": "Error", "message": "", "traceback": ""}
    if delay is None:
        gave_up = outcome.status != "retry" and not retryable(task, outcome.exc_types)
        reason = (
            DeadLetterReason.NOT_RETRYABLE if gave_up else DeadLetterReason.MAX_RETRIES_EXHAUSTED
        )
        return give_up(delivery, envelope, task, error, now, reason)
    eta = now + delay
    return Settlement(
        delivery=delivery,
        action="requeue",
        event="retried",
        transition=Transition(
            task_id=envelope.id,
            attempt=envelope.attempt,
            state=TaskState.RETRIED,
            changes={"error": error},
            receipt=delivery.receipt,
        ),
        body=with_delivery(delivery.body, attempt=envelope.attempt + 1, eta=eta),
        eta=eta,
        task=envelope.task,
        attempt=envelope.attempt,
        detail=f"in {delay:.3f}s after {_describe(error)}",
    )


def give_up(
    delivery: Delivery,
    envelope: Envelope,
    task: TaskConfig,
    error: dict[str, Any],
    now: float,
    reason: DeadLetterReason = DeadLetterReason.MAX_RETRIES_EXHAUSTED,
) -> Settlement:
    """The attempt failed for good: status failed, envelope to the dead letters."""
    changes = {
        "error": error,
        "finished_at": now,
        "dead_letter_reason": str(reason),
        "expires_at": now + task.result_ttl_s,
    }
    return Settlement(
        delivery=delivery,
        action="dead_letter",
        event="failed",
        transition=Transition(
            task_id=envelope.id,
            attempt=envelope.attempt,
            state=TaskState.FAILED,
            changes=changes,
            receipt=delivery.receipt,
        ),
        dead=_dead_letter(delivery, reason, envelope.task, envelope.attempt, error, now),
        task=envelope.task,
        attempt=envelope.attempt,
        detail=_describe(error),
        envelope=envelope,
    )


def reject(
    delivery: Delivery,
    reason: DeadLetterReason,
    error: dict[str, Any],
    *,
    task: str | None,
    attempt: int,
    now: float,
    task_id: str | None,
    fenced: bool = True,
) -> Settlement:
    """A delivery that must not run: dead-letter it, and fail the status of `task_id`.

    `task_id` is the id a verified envelope vouches for; None (the body did not decode or verify)
    writes no status at all, so a forged message cannot fail a genuine task that shares its id.
    `fenced=False` overrides the delivery fence: a poison attempt is failed for good although the
    dead delivery that started it last still owns it.
    """
    changes = {"error": error, "finished_at": now, "dead_letter_reason": str(reason)}
    transition = None
    if task_id is not None:
        receipt = delivery.receipt if fenced else None
        transition = Transition(
            task_id=task_id,
            attempt=attempt,
            state=TaskState.FAILED,
            changes=changes,
            receipt=receipt,
        )
    return Settlement(
        delivery=delivery,
        action="dead_letter",
        event="dead-lettered",
        transition=transition,
        dead=_dead_letter(delivery, reason, task, attempt, error, now),
        task=task,
        attempt=attempt,
        detail=f"{reason}: {_describe(error)}",
    )


def expired(delivery: Delivery, envelope: Envelope, task: TaskConfig, now: float) -> Settlement:
    """The task's `expires` passed before it started: cancelled, acked, never run."""
    return _cancelled(delivery, envelope, task, now, "expired", "expired before it started")


def skipped(delivery: Delivery, envelope: Envelope, why: str) -> Settlement:
    """A delivery whose task already finished (or was cancelled): ack without running it."""
    return Settlement(
        delivery=delivery,
        action="ack",
        event="skipped",
        task=envelope.task,
        attempt=envelope.attempt,
        detail=why,
        envelope=envelope,
    )


def _dead_letter(
    delivery: Delivery,
    reason: DeadLetterReason,
    task: str | None,
    attempt: int,
    error: dict[str, Any],
    now: float,
) -> DeadLetter:
    return DeadLetter(
        id=delivery.id,
        queue=delivery.queue,
        body=delivery.body,
        reason=str(reason),
        task=task,
        attempt=attempt,
        dead_at=now,
        error=error,
    )


def _describe(error: dict[str, Any]) -> str:
    message = str(error.get("message") or "")
    return f"{error.get('type')}: {message}" if message else str(error.get("type"))


def cancelled(delivery: Delivery, envelope: Envelope, task: TaskConfig, now: float) -> Settlement:
    """The handler stopped at a ctx call after `stemrun cancel`: cancelled, acked, not retried."""
    return _cancelled(delivery, envelope, task, now, "cancelled", "by stemrun cancel")


def _cancelled(
    delivery: Delivery, envelope: Envelope, task: TaskConfig, now: float, reason: str, detail: str
) -> Settlement:
    changes = {
        "finished_at": now,
        "meta": {"reason": reason},
        "expires_at": now + task.result_ttl_s,
    }
    return Settlement(
        delivery=delivery,
        action="ack",
        event="cancelled",
        transition=Transition(
            task_id=envelope.id,
            attempt=envelope.attempt,
            state=TaskState.CANCELLED,
            changes=changes,
            receipt=delivery.receipt,
        ),
        task=envelope.task,
        attempt=envelope.attempt,
        detail=detail,
        envelope=envelope,
    )
