"""Decide, per fetched delivery, whether it may run: undecodable, unsigned, unknown task, poison."""

from __future__ import annotations

from dataclasses import dataclass

from stemrun.backends.record import MAX_STARTS, StatusRecord, Transition
from stemrun.brokers.base import Delivery
from stemrun.config.model import Config, TaskConfig
from stemrun.enqueue import oversized
from stemrun.envelope import Envelope, Verifier, decode, peek_task
from stemrun.errors import DecodeError, SignatureInvalid
from stemrun.state import DeadLetterReason, TaskState
from stemrun.worker import settle
from stemrun.worker.execute import error_of
from stemrun.worker.lease import Held


@dataclass(frozen=True, slots=True)
class Admitted:
    """A delivery that may run."""

    envelope: Envelope
    task: TaskConfig


def admit(
    delivery: Delivery, config: Config, now: float, *, verifier: Verifier | None
) -> Admitted | settle.Settlement:
    """Admit a delivery, or the settlement that dead-letters it.

    This is the one place envelopes are decoded (and, with signing, verified) by the worker.
    """
    too_large = oversized(delivery.body, config)
    if too_large is not None:  # refused unparsed: parsing it is the cost the limit prevents
        error = _error("PayloadTooLarge", too_large)
        return settle.reject(
            delivery, DeadLetterReason.TOO_LARGE, error, task=None, attempt=0, now=now, task_id=None
        )
    task_name, attempt = peek_task(delivery.body)

    def reject(
        reason: DeadLetterReason, error: dict[str, str], task_id: str | None = None
    ) -> settle.Settlement:
        return settle.reject(
            delivery, reason, error, task=task_name, attempt=attempt, now=now, task_id=task_id
        )

    # Until the envelope decoded (and verified), nothing vouches for its id: a rejection then
    # writes no status, so a forged message cannot fail the genuine task whose id it carries.
    try:
        envelope = decode(delivery.body, verifier)
    except SignatureInvalid as exc:
        return reject(DeadLetterReason.SIGNATURE_INVALID, error_of(exc))
    except DecodeError as exc:
        return reject(DeadLetterReason.DECODE_ERROR, error_of(exc))
    if envelope.id != delivery.id:
        message = f"the message's id {delivery.id!r} is not its envelope's id {envelope.id!r}"
        return reject(DeadLetterReason.DECODE_ERROR, _error("DecodeError", message))
    task = config.tasks.get(envelope.task)
    if task is None:
        message = f"task {envelope.task!r} is not declared in stem.yaml (under `tasks:`)"
        error = _error("TaskNotRegistered", message)
        return reject(DeadLetterReason.UNREGISTERED_TASK, error, envelope.id)
    return Admitted(envelope, task)


def running_transition(held: Held, worker: str, now: float) -> Transition:
    """The `running` write of an attempt about to start (the store counts it as a start)."""
    envelope = held.envelope
    return Transition(
        task_id=envelope.id,
        attempt=envelope.attempt,
        state=TaskState.RUNNING,
        changes={"started_at": now, "worker": worker, "finished_at": None},
        receipt=held.delivery.receipt,
    )


def poison(held: Held, now: float) -> settle.Settlement:
    """Dead-letter an attempt whose every start ended with its worker's death."""
    message = (
        f"started {MAX_STARTS} times and the worker running it died each time, "
        "so it is treated as a poison message"
    )
    return settle.reject(
        held.delivery,
        DeadLetterReason.MAX_DELIVERIES_EXCEEDED,
        _error("MaxDeliveriesExceeded", message),
        task=held.envelope.task,
        attempt=held.envelope.attempt,
        now=now,
        task_id=held.envelope.id,
        fenced=False,
    )


def fresh_record(held: Held, worker: str, now: float) -> StatusRecord:
    """The status record of a message published without one (a raw broker publish)."""
    envelope = held.envelope
    return StatusRecord(
        id=envelope.id,
        task=envelope.task,
        state=TaskState.RUNNING,
        queue=envelope.queue,
        attempt=envelope.attempt,
        args=envelope.args,
        created_at=envelope.created_at,
        started_at=now,
        worker=worker,
        receipt=held.delivery.receipt,
        starts=1,
        parent_id=envelope.parent_id,
        root_id=envelope.root_id,
    )


def _error(type_name: str, message: str) -> dict[str, str]:
    return {"type": type_name, "message": message, "traceback": ""}
