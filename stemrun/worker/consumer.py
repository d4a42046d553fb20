"""The worker: fetch what fits, run it in a pool, settle outcomes, keep leases alive, stop cleanly.

One loop thread owns every store call (fetch, transitions, acks, lease renewals, heartbeats);
pools report back through an event queue, so stores are never used from handler threads. Each
iteration writes in batches: one transition for the attempts it starts, one for the outcomes it
settles, then one ack (see `settle`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from stemrun import signals
from stemrun.backends.base import Chords, FlowControl, ResultBackend, Telemetry
from stemrun.backends.record import is_poison
from stemrun.brokers.base import Broker, Delivery
from stemrun.clock import Clock, SystemClock
from stemrun.config.model import Config, PoolKind
from stemrun.errors import BackendError, BrokerError, UsageError
from stemrun.outbox import Sweeper
from stemrun.registry import Registry
from stemrun.shared_store import fetch_for
from stemrun.signing import verifier_for
from stemrun.store_base import require
from stemrun.stores import backend_for, broker_for
from stemrun.supervision import claim_supervisor, supervisor_gone
from stemrun.worker import report, settle
from stemrun.worker.admit import Admitted, admit, fresh_record, poison, running_transition
from stemrun.worker.cancel import CancelWatch
from stemrun.worker.continuation import Continuations
from stemrun.worker.execute import Outcome
from stemrun.worker.flow import FlowGate
from stemrun.worker.job import Beat, Done, Event, Progress, Wake
from stemrun.worker.lease import FETCH_LEASE_S, Held, Leases
from stemrun.worker.metrics import Recorder
from stemrun.worker.plan import Plan, resolve
from stemrun.worker.pool import Pool
from stemrun.worker.pools import ChildTaskClient, make_pool
from stemrun.worker.settler import Settler

log = report.log

IDLE_BLOCK_S = 0.05  # how long an idle worker waits in fetch for new work
BUSY_POLL_S = 0.01  # how long a busy worker with free room waits for an outcome before fetching
FULL_WAIT_S = 0.05  # how long a full worker waits for an outcome before its maintenance
STORE_RETRY_S = 0.5  # pause after a store error before trying again
SUPERVISOR_CHECK_S = 0.5  # how often a stopping worker under `stemrun up` checks its supervisor


class Worker:
    """Consumes the queues of one worker group; see `run` and `stop`."""

    def __init__(
        self,
        config: Config,
        *,
        group: str | None = None,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: PoolKind | None = None,
        name: str | None = None,
        burst: bool = False,
        broker: Broker | None = None,
        backend: ResultBackend | None = None,
        install_signal_handlers: bool = True,
        clock: Clock | None = None,
    ) -> None:
        """Raises UsageError (unknown group, undeclared queue, process pool without a file).

        Raises SigningConfigError when signing is on but no key is trusted.
        """
        self.config = config
        self._verifier = verifier_for(config.signing)
        self.plan: Plan = resolve(
            config, group=group, queues=queues, concurrency=concurrency, pool=pool, name=name
        )
        if self.plan.pool == "process" and config.path is None:
            raise UsageError(
                "the process pool needs a config loaded from a stem.yaml file (its children load "
                "it); use pool='thread' (or 'async') for a config built in code"
            )
        self.name = self.plan.name
        self.burst = burst
        self._clock: Clock = clock or SystemClock()
        self._install_signals = install_signal_handlers
        self._owns_broker = broker is None
        self._owns_backend = backend is None
        self.broker, self.backend = _open_stores(config, broker, backend)
        chords = require(self.backend, Chords)
        continuations = Continuations(config, self.broker, self.backend, chords, self._clock)
        self._registry = Registry(config)
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self._ended = threading.Event()  # run() has returned
        self._leases = Leases(self.broker, self._clock)
        self._sweeper = Sweeper(self.broker, self.backend)
        self._fetch_from_broker = fetch_for(self.broker, self.backend)
        self._buffer: deque[str] = deque()
        flow = require(self.backend, FlowControl)
        self._flow = FlowGate(config, flow, self._clock, self._leases, self._buffer)
        self._children_client = ChildTaskClient(config)
        self._telemetry = require(self.backend, Telemetry)
        interval_s = self._leases.heartbeat_interval(config, self.plan.queues)
        self._pulse = report.Pulse(self.plan, self._telemetry, interval_s=interval_s)
        self._metrics = Recorder(self._telemetry)
        self._settler = Settler(
            self.name,
            backend=self.backend,
            broker=self.broker,
            continuations=continuations,
            flow=self._flow,
            metrics=self._metrics,
        )
        self._cancels = CancelWatch(self.backend)
        self._supervisor = claim_supervisor()

    # -- public ------------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until stopped (or, with burst, until idle); returns the exit code.

        0 after a clean (graceful) stop, 1 after a forced stop: a second SIGTERM or SIGINT, or a
        graceful stop still waiting for running tasks after the group's `shutdown_timeout`.
        Raises BrokerError/BackendError only when the stores fail at start.
        """
        restore: Callable[[], None] = lambda: None  # noqa: E731
        if self._install_signals:
            restore = signals.install_stop(
                lambda graceful: self.stop(graceful=graceful), self._stopping.is_set
            )
        self._pulse.start(self._clock.now())
        pool = make_pool(
            self.plan, self.config, self._registry, self._events.put, self._children_client
        )
        pool.start()
        code = 1
        try:
            threading.Thread(target=self._bound_stop, name="stemrun-stop", daemon=True).start()
            code = self._consume(pool)
        finally:
            pool.close(graceful=code == 0)
            self._finish(clean=code == 0)
            self._ended.set()
            self._stopping.set()  # lets `_bound_stop` see the end of a run that was not stopped
            restore()
        return code

    def stop(self, *, graceful: bool = True) -> None:
        """Ask the worker to stop: finish in-flight tasks (graceful) or leave at once.

        Thread-safe and signal-safe.
        """
        (self._stopping if graceful else self._forced).set()
        self._events.put(Wake())

    def _bound_stop(self) -> None:
        """Force a graceful stop still waiting for running tasks after `shutdown_timeout`.

        Under `stemrun up` the supervisor bounds the stop instead, for as long as it lives: a
        worker a reload replaces drains without a bound, so no task runs twice because of a
        reload (docs/supervisor.md).
        """
        self._stopping.wait()
        while self._supervisor is not None and not supervisor_gone(self._supervisor):
            if self._ended.wait(SUPERVISOR_CHECK_S):
                return
        if self._ended.is_set():
            return
        timeout_s = self.plan.shutdown_timeout_s
        log.info(
            "worker %s stopping: waiting up to %gs for running tasks (a second SIGTERM or "
            "Ctrl-C forces the stop)",
            self.name,
            timeout_s,
        )
        if not self._ended.wait(timeout_s):
            log.warning(
                "worker %s: tasks still running after shutdown_timeout (%gs); forcing the stop, "
                "they are redelivered after their visibility_timeout",
                self.name,
                timeout_s,
            )
            self.stop(graceful=False)

    @property
    def processed(self) -> int:
        """Deliveries this worker has finished: succeeded, retried, failed or dead-lettered."""
        return self._settler.processed

    @property
    def failed(self) -> int:
        """Of the processed deliveries, those retried, failed or dead-lettered."""
        return self._settler.failed

    # -- setup ------------------------------------------------------------------------------

    def _finish(self, *, clean: bool) -> None:
        try:
            self._metrics.flush(force=True)
            if clean:
                self._telemetry.remove_worker(self.name)
        except BackendError as exc:
            log.warning("could not remove the heartbeat of worker %s: %s", self.name, exc)
        self._children_client.close()
        if self._owns_broker:
            self.broker.close()
        if self._owns_backend:
            self.backend.close()

    # -- the loop ---------------------------------------------------------------------------

    def _consume(self, pool: Pool) -> int:
        log.info(
            "worker %s consuming %s with %d %s slots",
            self.name,
            ",".join(self.plan.queues),
            self.plan.concurrency,
            self.plan.pool,
        )
        wait = 0.0
        while not self._forced.is_set():
            try:
                done = self._iterate(pool, wait)
            except (BrokerError, BackendError) as exc:
                log.error("worker %s: store error, retrying: %s", self.name, exc)
                time.sleep(STORE_RETRY_S)
                continue
            if done is not None:
                return 0
            wait = self._flow.wait(self._next_wait(pool))
        return 1

    def _iterate(self, pool: Pool, wait: float) -> bool | None:
        """One round; True when the worker should exit cleanly."""
        if not self._stopping.is_set() and supervisor_gone(self._supervisor):
            log.warning("worker %s: its supervisor is gone; draining and exiting", self.name)
            self._stopping.set()
        self._handle_events(wait)
        pool.maintain()
        self._renew()
        self._sweeper.maybe(self._clock.now())
        self._pulse.beat(
            self._clock.now(),
            self._leases.held.values(),
            processed=self.processed,
            failed=self.failed,
        )
        for key in self._cancels.due(self._leases.held):
            pool.cancel(key)
        if self._stopping.is_set():
            self._release_buffer()
            self._settler.flush()
            self._settler.send_acks()
            self._metrics.flush(force=True)
            return True if pool.running() == 0 and not self._leases.held else None
        # Start first: the freed slots take the next buffered tasks in the same write as the
        # outcomes that freed them; the fetch refills the buffer after.
        self._start(pool)
        fetched = self._fetch()
        if fetched and pool.free_slots():
            self._start(pool)
        self._settler.flush()
        self._settler.send_acks()
        self._metrics.flush()
        if self.burst and not fetched and not self._leases.held and not self._settler.pending:
            return True
        return None

    def _next_wait(self, pool: Pool) -> float:
        held = len(self._leases.held)
        if held == 0 and not self._stopping.is_set():
            return 0.0  # the next fetch blocks instead
        if held >= self.plan.capacity or self._stopping.is_set() or pool.free_slots() == 0:
            return FULL_WAIT_S
        return BUSY_POLL_S

    def _handle_events(self, wait: float) -> None:
        try:
            event = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break

    def _handle(self, event: Event) -> None:
        if isinstance(event, Done):
            self._settle(event.key, event.outcome)
        elif isinstance(event, Progress):
            held = self._leases.held.get(event.key)
            if held is not None and not held.lost:
                envelope = held.envelope
                self.backend.set_progress(envelope.id, envelope.attempt, event.fraction, event.meta)
            self._cancels.touched(event.key)
        elif isinstance(event, Beat):
            self._leases.extend_now(event.key)
            self._cancels.touched(event.key)

    # -- fetch and start ----------------------------------------------------------------------

    def _fetch(self) -> bool:
        room = self.plan.capacity - len(self._leases.held)
        if room <= 0:
            return False
        block = IDLE_BLOCK_S if not self._leases.held else 0.0
        queues = self._flow.queues(self.plan.queues)
        if not queues:
            self._stopping.wait(block)  # every queue is paused: idle as a blocking fetch would
            return False
        acks = self._settler.take_acks()  # sent in the fetch's round trip
        try:
            deliveries = self._fetch_from_broker(
                queues, room, consumer=self.name, lease_s=FETCH_LEASE_S, block_s=block, ack=acks
            )
        except BrokerError:
            self._settler.restore_acks(acks)
            raise
        admitted: list[Held] = []
        now = self._clock.now()
        for delivery in deliveries:
            result = admit(delivery, self.config, now, verifier=self._verifier)
            if isinstance(result, settle.Settlement):
                self._settler.add([result])
            else:
                admitted.append(self._hold(delivery, result))
        self._leases.adopt(admitted)
        return bool(deliveries)

    def _hold(self, delivery: Delivery, admitted: Admitted) -> Held:
        held = Held(delivery=delivery, envelope=admitted.envelope, task=admitted.task)
        report.held_event("received", held, worker=self.name)
        self._buffer.append(delivery.receipt)
        return held

    def _start(self, pool: Pool) -> None:
        batch, later = self._flow.gate(pool.free_slots(), self._take_startable)
        self._settler.add(later)
        now = self._clock.now()
        try:
            results = self._settler.flush(
                also=[running_transition(h, self.name, now) for h in batch]
            )
        except (BackendError, BrokerError):
            # Not started: they start on a later round (a `running` write repeated by the same
            # delivery changes nothing).
            self._buffer.extendleft(reversed([held.delivery.receipt for held in batch]))
            raise
        if not batch:
            return
        for held, accepted in zip(batch, results, strict=True):
            if not accepted and not self._may_run_fenced(held, now):
                continue
            held.started_at = now
            pool.submit(held.job())
            self._metrics.started(held.envelope.task, held.delivery.queue)
            report.held_event("started", held, worker=self.name)
        self._pulse.soon(now)

    def _take_startable(self, slots: int) -> list[Held]:
        batch: list[Held] = []
        now = self._clock.now()
        while self._buffer and len(batch) < slots:
            held = self._leases.held.get(self._buffer.popleft())
            if held is None or held.lost:
                continue
            expires_at = held.envelope.expires_at
            if expires_at is not None and expires_at <= now:
                self._leases.drop(held.delivery.receipt)
                self._settler.add([settle.expired(held.delivery, held.envelope, held.task, now)])
                continue
            batch.append(held)
        return batch

    def _may_run_fenced(self, held: Held, now: float) -> bool:
        """A rejected `running` write: run it anyway only when the record is missing.

        A poison attempt (every start ended with its worker's death) is dead-lettered.
        """
        record = self.backend.get(held.envelope.id)
        if record is None:
            self.backend.create([fresh_record(held, self.name, now)])
            return True
        self._leases.drop(held.delivery.receipt)
        if is_poison(record, held.envelope.attempt):
            self._settler.add([poison(held, now)])
            return False
        why = f"its status is already {record.state} (attempt {record.attempt})"
        self._settler.add([settle.skipped(held.delivery, held.envelope, why)])
        return False

    # -- outcomes -----------------------------------------------------------------------------

    def _settle(self, key: str, outcome: Outcome) -> None:
        held = self._leases.drop(key)
        if held is None:
            return
        if held.lost:
            log.warning(
                "dropping the outcome of task %s (%s): its lease was taken over by another worker",
                held.envelope.task,
                held.envelope.id,
            )
            return
        self._settler.outcome(held, outcome, self._clock.now())

    # -- leases, shutdown ---------------------------------------------------------------------

    def _renew(self) -> None:
        for held in self._leases.renew_due():
            if held.started_at is None:
                self._leases.drop(held.delivery.receipt)
            log.warning(
                "lost the lease of task %s (%s) to another worker; its result will be ignored",
                held.envelope.task,
                held.envelope.id,
            )

    def _release_buffer(self) -> None:
        """Hand back deliveries fetched but not started, unchanged, for other workers."""
        self._buffer.extend(self._flow.release())
        while self._buffer:
            held = self._leases.drop(self._buffer.popleft())
            if held is not None and not held.lost:
                self.broker.requeue(held.delivery, held.delivery.body, None)


def _open_stores(
    config: Config, broker: Broker | None, backend: ResultBackend | None
) -> tuple[Broker, ResultBackend]:
    """The given stores, or the configured ones. Raises BrokerError / BackendError."""
    return broker or broker_for(config), backend or backend_for(config)
