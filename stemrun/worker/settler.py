"""A worker's settlements between two writes: built from outcomes, written once per loop iteration.

Each flush is one `settle.apply` batch (transitions, canvas continuations, broker moves, acks);
only once it is written are its counters recorded, its unique keys released and its events logged,
and only for the writes the store accepted (a stale owner's result counts nowhere).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from stemrun.backends.base import ResultBackend
from stemrun.backends.record import Transition
from stemrun.brokers.base import Broker, Delivery
from stemrun.worker import report, settle
from stemrun.worker.continuation import Continuations
from stemrun.worker.execute import Outcome
from stemrun.worker.flow import FlowGate
from stemrun.worker.lease import Held
from stemrun.worker.metrics import Recorder

#: Events that end the processing of a delivery, and those of them that are failures.
_PROCESSED = frozenset({"succeeded", "retried", "failed", "dead-lettered"})
_FAILED = frozenset({"retried", "failed", "dead-lettered"})


class Settler:
    """The settlements one worker has yet to write, and its processed / failed tallies."""

    def __init__(
        self,
        worker: str,
        *,
        backend: ResultBackend,
        broker: Broker,
        continuations: Continuations,
        flow: FlowGate,
        metrics: Recorder,
    ) -> None:
        self._worker = worker
        self._backend = backend
        self._broker = broker
        self._continuations = continuations
        self._flow = flow
        self._metrics = metrics
        self._pending: list[settle.Settlement] = []
        self._acks: list[Delivery] = []  # written outcomes whose messages await their ack
        self._rng = random.Random()  # retry jitter
        self.processed = 0
        self.failed = 0

    @property
    def pending(self) -> bool:
        """Whether settlements wait for the next flush."""
        return bool(self._pending)

    def take_acks(self) -> list[Delivery]:
        """The acks to send (with the next fetch); `restore_acks` them if that fails."""
        acks, self._acks = self._acks, []
        return acks

    def restore_acks(self, acks: Sequence[Delivery]) -> None:
        """Keep acks whose sending failed, to send them again."""
        self._acks[:0] = acks

    def send_acks(self) -> None:
        """Send the acks no fetch took. Raises BrokerError (they are kept)."""
        acks = self.take_acks()
        if not acks:
            return
        try:
            self._broker.ack(acks)
        except BaseException:
            self.restore_acks(acks)
            raise

    def add(self, items: Iterable[settle.Settlement]) -> None:
        """Keep settlements for the next flush."""
        self._pending.extend(items)

    def outcome(self, held: Held, outcome: Outcome, now: float) -> None:
        """Settle an attempt by how it ended: succeeded, cancelled, or retried / failed."""
        self._metrics.ran(held, outcome, now)
        delivery, envelope, task = held.delivery, held.envelope, held.task
        if outcome.status == "succeeded":
            item = settle.succeeded(delivery, envelope, task, outcome, now)
        elif outcome.status == "cancelled":
            item = settle.cancelled(delivery, envelope, task, now)
        else:
            item = settle.unsuccessful(delivery, envelope, task, outcome, now, self._rng)
        self.add([item])

    def flush(self, also: Sequence[Transition] = ()) -> list[bool]:
        """Write the pending settlements as one batch, with `also` in the same backend call;
        returns whether each of `also` was accepted.

        Raises BackendError / BrokerError; the batch then stays pending and is written again
        (every write in it is fenced or keyed by its receipt).
        """
        if not self._pending and not also:
            return []
        batch, accepted = settle.apply(
            self._backend,
            self._broker,
            self._pending,
            self._continuations.run,
            also=also,
            deferred_acks=self._acks,
        )
        self._pending = []
        self.processed += sum(item.event in _PROCESSED for item in batch)
        self.failed += sum(item.event in _FAILED for item in batch)
        self._flow.settled(batch)
        self._metrics.settled(batch)
        for item in batch:
            report.task_event(
                item.event,
                task=item.task,
                task_id=item.delivery.id,
                attempt=item.attempt,
                queue=item.delivery.queue,
                worker=self._worker,
                detail=item.detail,
            )
        return accepted
