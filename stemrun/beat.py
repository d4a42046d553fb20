"""Beat: fires due schedule entries, exactly once each, from any number of processes.

Each tick the beat takes (or renews) the store's leader lease; only the leader fires. A fire is
enqueued under the deterministic id `sched:{name}:{scheduled UTC time}` and enqueue is
idempotent, so even two beats that both think they lead (a paused leader whose lease lapsed)
publish each fire once. The entry is then advanced with a versioned update; the loser of a race
changes nothing. A beat that was down fires each missed entry once, then continues its grid.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC

from stemrun.client import Stem
from stemrun.clock import Clock, SystemClock
from stemrun.config.model import Config
from stemrun.errors import StemrunError, UsageError
from stemrun.schedules.apply import apply_schedules
from stemrun.schedules.spec import fire_id, next_fire, parse_spec, to_datetime, to_epoch, zone
from stemrun.schedules.store import ScheduleEntry, ScheduleStore
from stemrun.stores import schedule_store_for
from stemrun.supervision import claim_supervisor, supervisor_gone

log = logging.getLogger("stemrun.beat")

STORE_RETRY_S = 1.0  # pause after a store error before the next tick


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """One fire a tick enqueued: which entry, its id, when it was due and when it went out."""

    name: str
    task_id: str
    scheduled_at: float
    enqueued_at: float
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TickResult:
    """What one tick did: whether this beat led, and the fires it enqueued."""

    leader: bool
    fires: tuple[Fire, ...] = ()


class Beat:
    """The scheduler loop; embeddable in an app process (`run` on a thread, `stop` to end)."""

    def __init__(
        self,
        config: Config,
        *,
        store: ScheduleStore | None = None,
        stem: Stem | None = None,
        clock: Clock | None = None,
        name: str | None = None,
        apply: bool = True,
        install_signal_handlers: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        """`apply`: upsert the declared schedules when `run` starts (never prunes)."""
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.name = name or f"beat-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._owns_store = store is None
        self._owns_stem = stem is None
        self.store = store or schedule_store_for(config)
        self.stem = stem or Stem(config, clock=self.clock)
        self._apply = apply
        self._install_signals = install_signal_handlers
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self.leader = False

    def run(self) -> int:
        """Tick until `stop` (or SIGTERM/SIGINT); returns the exit code (0).

        Raises UsageError when the declared schedules are invalid (with `apply`).
        """
        restore = self._signals() if self._install_signals else None
        try:
            if self._apply:
                diff = apply_schedules(self.config, self.store, now=self.clock.now())
                log.info(
                    "beat %s: %d schedule(s) added, %d changed",
                    self.name,
                    len(diff.added),
                    len(diff.changed),
                )
            log.info(
                "beat %s started (tick %ss, lock ttl %ss)",
                self.name,
                self.config.beat.tick_interval_s,
                self.config.beat.lock_ttl_s,
            )
            supervisor = claim_supervisor()
            while not self._stopping.is_set():
                if supervisor_gone(supervisor):
                    log.warning("beat %s: its supervisor is gone; stopping", self.name)
                    break
                self._pause(self._safe_tick())
        finally:
            self._shutdown()
            if restore is not None:
                restore()
        return 0

    def stop(self) -> None:
        """Ask `run` to return after the current tick."""
        self._stopping.set()

    def tick(self) -> TickResult:
        """Take or renew the lease and, as leader, fire every due entry once.

        Raises StemrunError subclasses when a store fails.
        """
        ttl = self.config.beat.lock_ttl_s
        was_leader, self.leader = self.leader, self.store.acquire_lease(self.name, ttl)
        if self.leader != was_leader:
            log.info("beat %s %s the leader lease", self.name, "took" if self.leader else "lost")
        if not self.leader:
            return TickResult(leader=False)
        now = self.clock.now()
        fires = [self._fire(entry, now) for entry in self.store.due(now)]
        return TickResult(leader=True, fires=tuple(f for f in fires if f is not None))

    def _safe_tick(self) -> float:
        """Tick; returns how long to wait before the next one."""
        try:
            self.tick()
            return self._delay()
        except StemrunError as exc:
            log.warning("beat %s: tick failed, retrying: %s", self.name, exc)
            return STORE_RETRY_S

    def _delay(self) -> float:
        tick = self.config.beat.tick_interval_s
        if not self.leader:
            return tick
        upcoming = self.store.next_due_at()
        if upcoming is None:
            return tick
        # Wake for the next fire rather than at the tick after it: lower dispatch drift.
        return max(0.0, min(tick, upcoming - self.clock.now()))

    def _pause(self, seconds: float) -> None:
        if isinstance(self.clock, SystemClock):
            self._stopping.wait(seconds)
        else:
            self.clock.sleep(seconds)

    def _fire(self, entry: ScheduleEntry, now: float) -> Fire | None:
        """Enqueue one due entry and advance it; None when the enqueue must be retried."""
        assert entry.next_run_at is not None
        scheduled = entry.next_run_at
        task_id = fire_id(entry.name, to_datetime(scheduled))
        error = None
        try:
            self.stem.enqueue(
                entry.task,
                entry.args,
                queue=entry.queue,
                task_id=task_id,
                countdown=self._rng.uniform(0, entry.jitter_s) if entry.jitter_s else None,
            )
        except UsageError as exc:
            # Permanent (task or queue gone from stem.yaml, args not JSON): record, move on.
            error = str(exc)
            log.error("schedule %s: cannot enqueue %s: %s", entry.name, task_id, exc)
        enqueued_at = self.clock.now()
        try:
            advanced = advance(entry, now, error)
        except ValueError as exc:
            # A spec this version cannot read (written by hand or a newer stemrun): park it.
            log.error("schedule %s: disabled, invalid spec: %s", entry.name, exc)
            advanced = dataclasses.replace(entry, enabled=False, last_error=str(exc))
        if self.store.update(advanced) is None:
            log.debug("schedule %s: another beat advanced it first", entry.name)
        elif error is None:
            log.info(
                "schedule %s fired", entry.name, extra={"task": entry.task, "task_id": task_id}
            )
        return Fire(
            name=entry.name,
            task_id=task_id,
            scheduled_at=scheduled,
            enqueued_at=enqueued_at,
            error=error,
        )

    def _signals(self) -> Callable[[], None]:
        from stemrun import signals

        return signals.install_stop(lambda graceful: self.stop(), self._stopping.is_set)

    def _shutdown(self) -> None:
        try:
            if self.leader:
                self.store.release_lease(self.name)
        except StemrunError as exc:
            log.warning("beat %s: could not release the lease: %s", self.name, exc)
        self.leader = False
        if self._owns_stem:
            self.stem.close()
        if self._owns_store:
            self.store.close()
        log.info("beat %s stopped", self.name)


def advance(entry: ScheduleEntry, now: float, error: str | None) -> ScheduleEntry:
    """The entry after firing its `next_run_at` at `now`: the next grid point or match after
    `now` (missed fires are not replayed), a one-shot `at:` disabled."""
    assert entry.next_run_at is not None
    tz = zone(entry.timezone)
    spec = parse_spec(entry.spec)
    scheduled = to_datetime(entry.next_run_at, UTC)
    upcoming = next_fire(spec, to_datetime(now, UTC), tz, anchor=scheduled)
    return dataclasses.replace(
        entry,
        last_run_at=entry.next_run_at,
        next_run_at=None if upcoming is None else to_epoch(upcoming),
        enabled=entry.enabled and upcoming is not None,
        total_run_count=entry.total_run_count + 1,
        last_error=error,
    )
