"""The broker contract: move envelope bytes between producers and workers, with leases.

A broker never decodes bodies; it knows a message by its task id, queue, priority and due time.
Every broker keeps per-queue dead letters. `Broker` is the hot path workers and producers need;
browsing and replaying dead letters (`DeadLetterAdmin`) and queue counts (`QueueMonitor`) are
capabilities a broker class adds (see stemrun.store_base). The registry in stemrun.stores picks the
class for a URL.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stemrun.errors import BrokerError, BrokerUnavailable
from stemrun.store_base import Capability, Store


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """An envelope to publish."""

    id: str
    queue: str
    body: bytes
    priority: int = 0
    eta: float | None = None  # epoch seconds; None means deliverable now


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """A leased message handed to one consumer; `receipt` fences acks from stale owners."""

    id: str
    queue: str
    body: bytes
    priority: int
    receipt: str
    deliveries: int  # 1 on the first delivery of this attempt


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message parked in a queue's dead-letter store."""

    id: str
    queue: str
    body: bytes
    reason: str
    task: str | None
    attempt: int
    dead_at: float
    error: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """Every field but the body (which stays in the store), JSON-ready."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "reason": self.reason,
            "attempt": self.attempt,
            "dead_at": self.dead_at,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """Counts for one queue at one moment."""

    pending: int = 0
    delayed: int = 0
    in_flight: int = 0
    dead: int = 0


class Broker(Store):
    """Publish, lease, acknowledge and dead-letter messages.

    All methods raise BrokerError (or BrokerUnavailable) on store failures; nothing from the
    underlying client library escapes.
    """

    role = "broker"
    error = BrokerError
    unavailable = BrokerUnavailable

    @abstractmethod
    def publish(self, messages: Sequence[Message]) -> None:
        """Publish all messages atomically (one transaction or round trip)."""

    @abstractmethod
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
        """Lease up to `limit` due messages, earlier queues first, higher priority first.

        Messages whose lease expired are delivered again (with `deliveries` incremented). Waits
        up to `block_s` for something to become due when nothing is ready. `ack` are acknowledged
        first (as `ack` does), in the same round trip where the store allows: a worker sends the
        acks of its settled tasks with its next fetch.
        """

    @abstractmethod
    def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> list[bool]:
        """Renew leases; False for a delivery this consumer no longer owns."""

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Remove finished messages; False (and nothing changed) for a stale receipt."""

    @abstractmethod
    def requeue(self, delivery: Delivery, body: bytes, eta: float | None) -> bool:
        """Atomically replace a leased message by `body` due at `eta` (a retry)."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, entry: DeadLetter) -> bool:
        """Atomically move a leased message to its queue's dead letters."""


class DeadLetterAdmin(Capability):
    """Browse, replay and delete dead letters (the `dlq` commands and the dashboard)."""

    purpose = "browse, replay or purge dead letters"

    @abstractmethod
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first, of one queue or all."""

    @abstractmethod
    def dead_letter_get(self, task_id: str) -> DeadLetter | None:
        """One dead letter by task id."""

    @abstractmethod
    def replay(self, task_id: str, body: bytes, eta: float | None) -> bool:
        """Atomically remove a dead letter and publish `body` in its place; False if absent."""

    @abstractmethod
    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters of one queue or all; returns how many."""

    @abstractmethod
    def delete_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Atomically delete the dead letters with these ids; returns how many existed."""


class QueueMonitor(Capability):
    """Count what each queue holds (`observe queues`, metrics, the dashboard)."""

    purpose = "count queued, delayed, in-flight and dead messages"

    @abstractmethod
    def stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Pending, delayed, in-flight and dead counts per queue."""
