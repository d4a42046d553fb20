"""`stemrun up`: run a generation of children, restart crashes, apply reloads, stop on signals.

One thread (the main one) owns every child; signal handlers and the file watcher only set flags
and wake it. A reload is applied only once the new generation has shown it can open its stores
and import its handlers (see `preflight`). It starts each replacement before draining the child
it replaces, so a group never stops serving; the old child finishes its in-flight tasks and acks
them, the buffered ones go back to the broker for the new child, and nothing runs twice. A stop
drains every child for at most its group's `shutdown_timeout`, then forces it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stemrun import signals
from stemrun.config.model import DEFAULT_SHUTDOWN_TIMEOUT_S, Config
from stemrun.errors import ConfigError, UsageError
from stemrun.metrics import MetricsServer, follow_metrics
from stemrun.metrics import serve as serve_metrics
from stemrun.stores import process_local
from stemrun.supervisor import schedule_sync
from stemrun.supervisor.backoff import Backoff
from stemrun.supervisor.children import Child, Launch, spawn
from stemrun.supervisor.generation import (
    Change,
    ChildSpec,
    Selection,
    check_only,
    diff,
    restart_workers,
    wanted,
)
from stemrun.supervisor.handover import Handovers
from stemrun.supervisor.preflight import Checks, Preflight, needed
from stemrun.supervisor.reload import Debouncer, ReloadFailures, Watcher, read_validated
from stemrun.supervisor.snapshot import Snapshots
from stemrun.supervisor.waker import Waker
from stemrun.url import mask_url

log = logging.getLogger("stemrun.supervisor")

TICK_S = 0.1  # longest the loop sleeps between checks of its children
KILL_WAIT_S = 5.0  # how long a forced stop waits for each SIGKILLed child to be reaped
CLEAN_EXITS = (0, -signal.SIGTERM)  # a child stopped by SIGTERM before it could drain is clean


@dataclass(frozen=True, slots=True, kw_only=True)
class UpOptions:
    """The `up` command line."""

    reload: bool = True
    reload_code: bool = False
    beat: bool = True
    only: tuple[str, ...] | None = None
    log_level: str | None = None
    log_format: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingReload:
    """A valid edit whose new generation is being checked before it is applied."""

    config: Config
    text: str
    change: Change
    preflight: Preflight


class Slot:
    """A place for one wanted child: its spec, the running process, its restart state."""

    def __init__(self, spec: ChildSpec, generation: int) -> None:
        self.spec = spec
        self.generation = generation  # the reload that introduced this spec (names the child)
        self.child: Child | None = None
        self.backoff = Backoff()
        self.restart_at: float | None = None  # set while a crashed child waits for its restart


class Supervisor:
    """Runs the children a stem.yaml asks for until told to stop; see `run`."""

    def __init__(self, config: Config, options: UpOptions) -> None:
        """Raises UsageError (unknown --only group, config not loaded from a file)."""
        if config.path is None:
            raise UsageError("`stemrun up` needs a config loaded from a stem.yaml file")
        check_only(config, options.only)
        self.config = config
        self.options = options
        self._selection = Selection(
            only=options.only,
            beat=options.beat,
            log_level=options.log_level,
            log_format=options.log_format,
        )
        self.config_path = config.path
        self._snapshots = Snapshots(config.path)
        self._file = config.path  # what children load: the latest validated copy
        self._serial = 0  # numbers the copies
        self._launch = Launch(
            host=socket.gethostname(),
            log_level=options.log_level,
            log_format=options.log_format,
        )
        self.slots: dict[str, Slot] = {}
        self.draining: list[Child] = []
        self.handovers = Handovers()
        self.generation = 0
        self._waker = Waker()
        self._lock = threading.Lock()  # guards the debouncer (the watcher thread writes it)
        self._debouncer = Debouncer()
        self._stopping = False
        self._forced = False
        self._stop_sent = False
        self._unclean = False  # a child was forced, killed or failed while stopping
        self._hup = False
        self._metrics: MetricsServer | None = None
        self._reload_failures = ReloadFailures()
        self._pending: PendingReload | None = None

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped: 0 after a graceful stop, 1 after a forced one (a second
        signal, or a child still running after its `shutdown_timeout`)."""
        restore = self._install_signals()
        watcher = None
        try:
            self._start()
            self._metrics = serve_metrics(
                self.config, who="supervisor", extra=[self._reload_failures]
            )
            if self.options.reload:
                watcher = Watcher(
                    self.config_path, code=self.options.reload_code, on_change=self.changed
                )
                watcher.start()
            return self._loop()
        finally:
            if watcher is not None:
                watcher.stop()
            self._cancel_pending()
            self._snapshots.clear()
            self.handovers.close()
            if self._metrics is not None:
                self._metrics.close()
            restore()
            self._waker.close()

    def changed(self, code: bool = False) -> None:
        """A watched file changed (thread-safe): reload once the edits settle."""
        with self._lock:
            self._debouncer.changed(time.monotonic(), code=code)
        self._waker.wake()

    def stop(self, *, graceful: bool = True) -> None:
        """Ask for a graceful (drain every child, bounded) or immediate (SIGKILL) stop.

        Signal-safe.
        """
        if graceful:
            self._stopping = True
        else:
            self._forced = True
        self._waker.wake()

    # -- the loop -------------------------------------------------------------------------------

    def _start(self) -> None:
        self.generation = 1
        found = read_validated(self.config_path)
        if found is not None:
            self.config = found[0]
            self._freeze(found[1])
        schedule_sync.apply(self.config)
        self.handovers.use(self.config)
        specs = wanted(self.config, self._selection)
        now = time.monotonic()
        for key, spec in specs.items():
            self.slots[key] = Slot(spec, self.generation)
            self._spawn(self.slots[key], now)
        log.info("supervising %d children from %s", len(specs), self.config_path)

    def _loop(self) -> int:
        while True:
            self._waker.wait(TICK_S)
            if self._forced:
                self._kill_all()
                return 1
            try:
                self._tick(time.monotonic())
            except Exception:
                log.exception("supervisor: unexpected error (carrying on)")
            if self._stopping and self._stop_sent and not self._alive():
                if self._unclean:
                    log.warning("every child has stopped, not all of them cleanly; exiting")
                    return 1
                log.info("every child has stopped; exiting")
                return 0

    def _tick(self, now: float) -> None:
        if self._stopping and not self._stop_sent:
            self._drain_all(now)
        self._reap(now)
        self._snapshots.prune({self._file, *(child.config_file for child in self._live())})
        if self._stopping:
            self._enforce_bounds(now)
            return
        for slot in self.slots.values():
            if slot.child is None and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot, now)
        current = {key: slot.child for key, slot in self.slots.items()}
        for old, why in self.handovers.due(current, now):
            self._retire(old, why)
        with self._lock:
            code = self._debouncer.take(now)
        if self._hup:
            self._hup, code = False, bool(code)
            log.info("SIGHUP received")
        if code is not None:
            self._reload(code=code)
        self._finish_reload()

    def _reap(self, now: float) -> None:
        for slot in self.slots.values():
            child = slot.child
            code = None if child is None else child.poll()
            if child is None or code is None:
                continue
            slot.child = None
            if child.stopping or self._stopping:
                log.info("%s (pid %d) stopped with exit code %d", child.spec.label, child.pid, code)
                self._unclean = self._unclean or (self._stopping and code not in CLEAN_EXITS)
            else:
                self._crashed(slot, child, code, now)
        for child in list(self.draining):
            code = child.poll()
            if code is not None:
                self.draining.remove(child)
                log.info("%s (pid %d) drained, exit code %d", child.spec.label, child.pid, code)
                self._unclean = self._unclean or (self._stopping and code not in CLEAN_EXITS)

    def _crashed(self, slot: Slot, child: Child, code: int, now: float) -> None:
        child.kill_leftovers()
        delay = slot.backoff.crashed(started_at=child.started_at, now=now)
        slot.restart_at = now + delay
        if slot.backoff.looping:
            log.error(
                "%s keeps crashing (%d exits within %.0fs, last code %d): retrying every %.0fs; "
                "see its log lines above",
                child.spec.label,
                slot.backoff.recent_crashes,
                slot.backoff.policy.loop_window_s,
                code,
                delay,
            )
            return
        log.warning(
            "%s (pid %d) exited unexpectedly with code %d; restarting in %.1fs",
            child.spec.label,
            child.pid,
            code,
            delay,
        )

    def _spawn(self, slot: Slot, now: float) -> None:
        name = self._launch.name(slot.spec, slot.generation)
        slot.restart_at = None
        try:
            slot.child = spawn(self._launch, slot.spec, name, self._file, now)
        except OSError as exc:
            delay = slot.backoff.crashed(started_at=now, now=now)
            slot.restart_at = now + delay
            log.error("could not start %s: %s; retrying in %.1fs", slot.spec.label, exc, delay)
            return
        group = f" group={slot.spec.group}" if slot.spec.group else ""
        log.info("started %s pid=%d name=%s%s", slot.spec.label, slot.child.pid, name, group)

    # -- reload ---------------------------------------------------------------------------------

    def _reload(self, *, code: bool) -> None:
        """Validate the file; apply it at once, or once `preflight` has checked what it needs."""
        what = "task code" if code else self.config_path.name
        log.info("%s changed; validating", what)
        self._cancel_pending()
        try:
            found = read_validated(self.config_path)
        except ConfigError as exc:
            self._refuse(
                f"{self.config_path} is invalid; the running generation keeps going unchanged:\n"
                f"{exc}"
            )
            return
        if found is None:
            log.info("%s changed while being read; waiting for the next save", self.config_path)
            return
        config, text = found
        try:
            self._check_acceptable(config)
            specs = wanted(config, self._selection)
        except UsageError as exc:
            self._refuse(f"reload refused, the running generation keeps going: {exc}")
            return
        current = {key: slot.spec for key, slot in self.slots.items()}
        change = diff(current, specs)
        if code:
            change = restart_workers(change, specs)
        checks = needed(self.config, config, change)
        if checks.empty:
            self._commit(config, text, change)
            return
        log.info("checking the new generation before handing over: %s", _describe(checks))
        preflight = Preflight(config, checks)
        self._pending = PendingReload(config=config, text=text, change=change, preflight=preflight)

    def _finish_reload(self) -> None:
        """Apply or refuse the reload being checked, once its checks are done."""
        pending = self._pending
        if pending is None:
            return
        problems = pending.preflight.outcome()
        if problems is None:
            return
        self._pending = None
        if problems:
            self._refuse(
                "reload refused, the running generation keeps going unchanged: the new one "
                "could not start:\n  " + "\n  ".join(problems)
            )
            return
        self._commit(pending.config, pending.text, pending.change)

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.preflight.cancel()
            self._pending = None
            log.info("the reload being checked is abandoned")

    def _refuse(self, message: str) -> None:
        log.error(message)
        self._reload_failures.count += 1

    def _commit(self, config: Config, text: str, change: Change) -> None:
        """Make `config` the running one and start, restart and drain what `change` says."""
        extra = [self._reload_failures]
        self._metrics = follow_metrics(self._metrics, self.config, config, extra=extra)
        self.config = config
        for warning in config.warnings:  # the children leave them to this process
            log.warning("%s", warning)
        self._freeze(text)
        schedule_sync.apply(config)
        self.handovers.use(config)
        if change.empty:
            log.info("reloaded: no child affected")
            return
        self.generation += 1
        self._apply(change, time.monotonic())

    def _freeze(self, text: str) -> None:
        """Children started from now on load a copy of exactly this validated text."""
        self._serial += 1
        self._file = self._snapshots.take(text, self._serial)

    def _check_acceptable(self, config: Config) -> None:
        """Raises UsageError for a store only one process can use (memory://)."""
        for role, url in (("broker", config.broker), ("result_backend", config.result_backend)):
            if process_local(url):
                raise UsageError(f"{role} {mask_url(url)} is memory:// (one process only)")
        missing = [name for name in self.options.only or () if name not in config.workers]
        if missing:
            log.warning("--only group(s) %s no longer declared", ", ".join(missing))

    def _apply(self, change: Change, now: float) -> None:
        """Start replacements first, then drain what they replace or what was removed."""
        for spec in change.start:
            self.slots[spec.key] = Slot(spec, self.generation)
            self._spawn(self.slots[spec.key], now)
            log.info("reload %d: %s added", self.generation, spec.label)
        for spec in change.restart:
            old = self.slots[spec.key].child
            self.slots[spec.key] = Slot(spec, self.generation)
            self._spawn(self.slots[spec.key], now)
            why = ", ".join(change.why.get(spec.key, ())) or "changed"
            log.info("reload %d: %s restarted (%s changed)", self.generation, spec.label, why)
            if old is not None and spec.kind == "worker":
                self.handovers.add(spec.key, old, now)  # drained once the new one serves
            else:
                self._retire(old, "replaced")
        for spec in change.stop:
            self._retire(self.slots.pop(spec.key).child, "removed")
            log.info("reload %d: %s removed", self.generation, spec.label)

    def _retire(self, child: Child | None, why: str) -> None:
        if child is None:
            return
        child.drain()
        self.draining.append(child)
        log.info("draining %s (pid %d): %s", child.spec.label, child.pid, why)

    # -- stopping -------------------------------------------------------------------------------

    def _live(self) -> list[Child]:
        slots = [slot.child for slot in self.slots.values() if slot.child is not None]
        return slots + self.handovers.children() + self.draining

    def _alive(self) -> bool:
        return any(child.poll() is None for child in self._live())

    def _drain_all(self, now: float) -> None:
        self._stop_sent = True
        self._cancel_pending()
        self.draining += self.handovers.take_all()
        children = self._live()
        bounds = [self._shutdown_timeout(child) for child in children]
        log.info(
            "stopping: draining %d children for at most %gs (a second SIGTERM or Ctrl-C kills "
            "them)",
            len(children),
            max(bounds, default=0),
        )
        for child, bound in zip(children, bounds, strict=True):
            child.bound(now, bound)

    def _shutdown_timeout(self, child: Child) -> float:
        """The bound of `child`'s stop: its group's `shutdown_timeout` in the running config."""
        group = self.config.workers.get(child.spec.group or "")
        if child.spec.kind != "worker" or group is None:
            return DEFAULT_SHUTDOWN_TIMEOUT_S
        return group.shutdown_timeout_s

    def _enforce_bounds(self, now: float) -> None:
        for child in self._live():
            done = child.enforce(now)
            if done == "forced":
                log.warning(
                    "%s (pid %d) still running after shutdown_timeout (%gs); forcing its stop: "
                    "its unfinished tasks are redelivered after their visibility_timeout",
                    child.spec.label,
                    child.pid,
                    self._shutdown_timeout(child),
                )
            elif done == "killed":
                log.error(
                    "%s (pid %d) did not exit after its forced stop; killing it",
                    child.spec.label,
                    child.pid,
                )

    def _kill_all(self) -> None:
        children = self._live()
        log.warning(
            "killing %d children now; their in-flight tasks will be redelivered", len(children)
        )
        for child in children:
            child.kill()
        for child in children:
            if child.wait(KILL_WAIT_S) is None:
                log.error("%s (pid %d) did not exit after SIGKILL", child.spec.label, child.pid)

    def _install_signals(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop gracefully, a second one at once; SIGHUP reloads."""

        def on_hup(signum: int) -> None:
            self._hup = True  # no lock here: the main thread may hold it
            self._waker.wake()

        on_stop = signals.stop_handler(
            lambda graceful: self.stop(graceful=graceful), lambda: self._stopping
        )
        stops = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop}
        return signals.install({**stops, signal.SIGHUP: on_hup})


def _describe(checks: Checks) -> str:
    """`result_backend opens; 3 handler(s) import`, for a log line."""
    parts = [f"{role} opens" for role in checks.stores]
    if checks.handlers:
        parts.append(f"{len(checks.handlers)} handler(s) import")
    return "; ".join(parts)
