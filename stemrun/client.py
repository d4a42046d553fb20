"""The producer side: `Stem` enqueues tasks, reads their status and manages dead letters."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from stemrun.backends.base import FlowControl, ResultBackend, Telemetry
from stemrun.backends.record import StatusRecord
from stemrun.brokers.base import Broker, DeadLetter, DeadLetterAdmin
from stemrun.canvas import Canvas, SignatureLike, Step, check, link_info, signature
from stemrun.clock import Clock, SystemClock
from stemrun.config.model import Config, UniqueConfig
from stemrun.enqueue import (
    EnqueueOptions,
    Item,
    When,
    build_envelope,
    check_queue,
    message_of,
    options_of,
    queued_record,
)
from stemrun.envelope import Envelope, Signer, peek_task, with_delivery
from stemrun.errors import DecodeError, StemrunError, UsageError, WaitTimeout
from stemrun.flow import Claim, claim_all, release_all
from stemrun.outbox import Enqueuer
from stemrun.registry import Registry
from stemrun.signing import signer_for
from stemrun.state import TERMINAL, TaskState
from stemrun.store_base import require
from stemrun.stores import backend_for, broker_for

#: The public name of a status record.
TaskStatus = StatusRecord

#: How often `wait` polls the result backend; low enough for ~ms latency, cheap on every store.
WAIT_POLL_S = 0.01

__all__ = ["WAIT_POLL_S", "EnqueueOptions", "Stem", "TaskStatus", "When"]


class Stem:
    """A connection to one stemrun deployment, described by its stem.yaml."""

    def __init__(
        self,
        config: Config,
        *,
        broker: Broker | None = None,
        backend: ResultBackend | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.registry = Registry(config)
        self.clock: Clock = clock or SystemClock()
        self._broker = broker
        self._backend = backend
        self._signer: Signer | None = None
        self._enqueuer_made: Enqueuer | None = None

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Stem:
        """Load stem.yaml (default `$STEM_CONFIG`, else ./stem.yaml). Raises ConfigError."""
        from stemrun.config import load_config

        return cls(load_config(path))

    @property
    def broker(self) -> Broker:
        """The broker, opened on first use."""
        if self._broker is None:
            self._broker = broker_for(self.config)
        return self._broker

    @property
    def backend(self) -> ResultBackend:
        """The result backend, opened on first use."""
        if self._backend is None:
            self._backend = backend_for(self.config)
        return self._backend

    @property
    def _enqueuer(self) -> Enqueuer:
        if self._enqueuer_made is None:
            self._enqueuer_made = Enqueuer(self.broker, self.backend)
        return self._enqueuer_made

    @property
    def dead_letter_admin(self) -> DeadLetterAdmin:
        """The broker's dead-letter admin. Raises BrokerError when the broker has none."""
        return require(self.broker, DeadLetterAdmin)

    @property
    def flow(self) -> FlowControl:
        """The backend's flow control. Raises BackendError when the backend has none."""
        return require(self.backend, FlowControl)

    @property
    def telemetry(self) -> Telemetry:
        """The backend's heartbeats and counters. Raises BackendError when it keeps none."""
        return require(self.backend, Telemetry)

    def enqueue(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: When | None = None,
        expires: float | When | None = None,
        task_id: str | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        link: SignatureLike | None = None,
        link_error: SignatureLike | None = None,
    ) -> str:
        """Publish one task and return its id; an id that already exists is not published again.

        `link` is enqueued when the task succeeds (with its result as `previous`), `link_error`
        when it fails for good (with `error` and `task_id`); both as `{id}.link[_error]`.

        Raises TaskNotRegistered, UnknownQueue, PayloadTooLarge (args over the task's
        `limits.max_payload`) or UsageError for bad input and SigningConfigError
        when signing is on but this config cannot sign (nothing published in either case),
        BrokerError/BackendError when a store fails.
        """
        options = EnqueueOptions(
            headers=headers,
            queue=queue,
            priority=priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
            task_id=task_id,
            parent_id=parent_id,
            root_id=root_id,
            canvas=link_info(link, link_error),
        )
        follow_ups = [signature(s) for s in (link, link_error) if s is not None]
        check(self.config, follow_ups)
        return self.enqueue_many([(task, args or {}, options)])[0]

    def enqueue_many(self, items: Iterable[Item]) -> list[str]:
        """Publish a batch in one store round trip; returns the ids in order.

        Every item is validated before anything is published. A task with a `unique` key costs
        one more round trip (its claim); while the key is held, the item publishes nothing and
        its id is the holder's (see docs/flow-control.md). Raises UsageError for a key template
        naming an arg or header the item lacks.
        """
        signer = self._signer_or_refuse()
        now = self.clock.now()
        envelopes = [self._build(item[0], item[1], options_of(item), now) for item in items]
        messages = [
            message_of(env, signer, max_payload=self.registry.task(env.task).max_payload)
            for env in envelopes
        ]
        # Unique keys are claimed before anything is written: a duplicate publishes nothing.
        uniques = self._uniques(envelopes)
        has_unique = any(spec for spec, _ in uniques)
        dupes, claims = (
            claim_all(self.flow, uniques, now, self._finished) if has_unique else ({}, [])
        )
        keep = [i for i in range(len(envelopes)) if i not in dupes]
        try:
            created = self._enqueuer(
                [queued_record(envelopes[i]) for i in keep], [messages[i] for i in keep]
            )
        except BaseException:
            self._release_quietly(claims)
            raise
        fresh_ids = {envelopes[i].id for i, is_new in zip(keep, created, strict=True) if is_new}
        self._release([c for c in claims if c.task_id not in fresh_ids])
        return [dupes.get(i, env.id) for i, env in enumerate(envelopes)]

    def _release(self, claims: Sequence[Claim]) -> None:
        if claims:  # only items with a unique key hold claims, so flow control is there
            release_all(self.flow, claims)

    def _release_quietly(self, claims: Sequence[Claim]) -> None:
        """Release after a failed enqueue: the enqueue's error is the one to raise."""
        try:
            self._release(claims)
        except StemrunError:
            pass  # a unique claim lapses by its TTL

    def _uniques(self, envelopes: Sequence[Envelope]) -> list[tuple[UniqueConfig | None, Envelope]]:
        return [(self._unique_of(env), env) for env in envelopes]

    def _unique_of(self, env: Envelope) -> UniqueConfig | None:
        # Workflow members are exempt: their workflow waits for their own deterministic ids.
        if env.canvas and "kind" in env.canvas:
            return None
        return self.registry.task(env.task).unique

    def _finished(self, task_id: str) -> bool:
        record = self.backend.get(task_id)
        return record is not None and record.state in TERMINAL

    @property
    def canvas(self) -> Canvas:
        """Chains, groups, chords and their progress (see stemrun.canvas)."""
        return Canvas(self)

    def run_workflow(self, name: str, args: Mapping[str, Any] | None = None) -> str:
        """Start a workflow declared in stem.yaml; returns its id (a status record too).

        Raises UsageError for an unknown workflow name or bad args.
        """
        return self.canvas.workflow(name, args)

    def enqueue_steps(self, steps: Sequence[Step]) -> list[str]:
        """Publish canvas steps (from stemrun.canvas) under their deterministic ids."""
        return self.enqueue_many(
            [
                (
                    step.signature.task,
                    step.args,
                    EnqueueOptions(
                        headers=step.signature.headers,
                        queue=step.signature.queue,
                        priority=step.signature.priority,
                        task_id=step.id,
                        parent_id=step.parent_id,
                        root_id=step.root_id,
                        canvas=step.canvas,
                    ),
                )
                for step in steps
            ]
        )

    def status(self, task_id: str) -> TaskStatus:
        """The task's status record; state `unknown` for an id never enqueued (or expired)."""
        record = self.backend.get(task_id)
        if record is None:
            return StatusRecord(id=task_id, task="", state=TaskState.UNKNOWN, queue="")
        return record

    def wait(
        self,
        task_id: str,
        timeout: float | None = None,
        *,
        on_update: Callable[[TaskStatus], None] | None = None,
    ) -> TaskStatus:
        """Block until the task is terminal and return its status.

        Works from any process: it polls the result backend. `on_update` sees every polled
        status (for progress displays). Raises WaitTimeout (a TimeoutError) when `timeout`
        seconds pass first, UsageError for an unknown id.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(task_id)
            if status.state is TaskState.UNKNOWN:
                raise UsageError(f"task {task_id!r} is unknown")
            if on_update is not None:
                on_update(status)
            if status.state in TERMINAL:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id!r} still {status.state} after {timeout}s")
            time.sleep(WAIT_POLL_S)

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first. Raises UnknownQueue for an undeclared queue."""
        if queue is not None:
            check_queue(self.config, queue)
        return self.dead_letter_admin.dead_letters(queue, limit)

    def replay(self, entries: Sequence[DeadLetter], *, delay: float = 0.0) -> list[str]:
        """Re-enqueue dead letters under the same ids with a fresh retry budget.

        Each status returns to `queued` with the replay recorded in `meta`.
        """
        now = self.clock.now()
        eta = now + delay if delay > 0 else None
        replayed = []
        for entry in entries:
            try:
                body = with_delivery(entry.body, attempt=0, eta=eta)
            except DecodeError:
                body = entry.body  # undecodable: replay as is, it will dead-letter again
            self.backend.replace(self._replayed_record(entry, now))
            if self.dead_letter_admin.replay(entry.id, body, eta):
                replayed.append(entry.id)
        return replayed

    def purge_dead_letters(
        self, queue: str | None = None, *, task_ids: Sequence[str] | None = None
    ) -> int:
        """Delete dead letters of one queue, of all, or (`task_ids`) just those; how many.

        Unknown ids are ignored. Raises UnknownQueue, or UsageError for both a queue and ids.
        """
        if task_ids is not None:
            if queue is not None:
                raise UsageError("purge dead letters by queue or by id, not both")
            return self.dead_letter_admin.delete_dead_letters(task_ids)
        if queue is not None:
            check_queue(self.config, queue)
        return self.dead_letter_admin.purge_dead_letters(queue)

    def close(self) -> None:
        """Close the store connections."""
        for store in (self._broker, self._backend):
            if store is not None:
                store.close()
        self._broker = self._backend = None

    def __enter__(self) -> Stem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _signer_or_refuse(self) -> Signer | None:
        """The signer, built on first enqueue; a config that cannot sign refuses every enqueue.

        Built lazily because a verify-only (public keys) config is valid for status, dlq and
        worker commands. Raises SigningConfigError before any store is written.
        """
        if self._signer is None and self.config.signing is not None:
            self._signer = signer_for(self.config.signing)
        return self._signer

    def _build(
        self, task: str, args: Mapping[str, Any], options: EnqueueOptions, now: float
    ) -> Envelope:
        return build_envelope(self.config, task, self.registry.task(task), args, options, now)

    def _replayed_record(self, entry: DeadLetter, now: float) -> StatusRecord:
        old = self.backend.get(entry.id)
        if old is None:
            task, _ = peek_task(entry.body)
            old = StatusRecord(
                id=entry.id,
                task=task or "",
                state=TaskState.QUEUED,
                queue=entry.queue,
                created_at=now,
            )
        replays = int(old.meta.get("replays", 0)) + 1
        return dataclasses.replace(
            old,
            state=TaskState.QUEUED,
            attempt=0,
            result=None,
            error=None,
            progress=None,
            progress_meta={},
            started_at=None,
            finished_at=None,
            dead_letter_reason=None,
            expires_at=None,
            meta={
                **old.meta,
                "replays": replays,
                "replayed_at": now,
                "replayed_from": entry.reason,
            },
        )
