"""`stemrun up`: run a generation of children, restart crashes, apply reloads, stop on signals.

One thread (the main one) owns every child; signal handlers and the file watcher only set flags
and wake it. A reload starts each replacement before draining the child it replaces, so a group
never stops serving; the old child finishes its in-flight tasks and acks them, the buffered ones
go back to the broker for the new child, and nothing runs twice.
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
from stemrun.config.model import Config
from stemrun.errors import UsageError
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
from stemrun.supervisor.reload import Debouncer, Watcher, read_validated, validated
from stemrun.supervisor.snapshot import Snapshots
from stemrun.supervisor.waker import Waker
from stemrun.url import mask_url

log = logging.getLogger("stemrun.supervisor")

TICK_S = 0.1  # longest the loop sleeps between checks of its children
KILL_WAIT_S = 5.0  # how long a forced stop waits for each SIGKILLed child to be reaped


@dataclass(frozen=True, slots=True, kw_only=True)
class UpOptions:
    """The `up` command line."""

    reload: bool = True
    reload_code: bool = False
    beat: bool = True
    only: tuple[str, ...] | None = None
    log_level: str | None = None
    log_format: str | None = None


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
        self._hup = False
        self._metrics: MetricsServer | None = None

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped: 0 after a graceful stop, 1 after a forced one."""
        restore = self._install_signals()
        watcher = None
        try:
            self._start()
            self._metrics = serve_metrics(self.config, who="supervisor")
            if self.options.reload:
                watcher = Watcher(
                    self.config_path, code=self.options.reload_code, on_change=self.changed
                )
                watcher.start()
            return self._loop()
        finally:
            if watcher is not None:
                watcher.stop()
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
        """Ask for a graceful (drain every child) or immediate (SIGKILL) stop; signal-safe."""
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
                log.info("every child has stopped; exiting")
                return 0

    def _tick(self, now: float) -> None:
        if self._stopping and not self._stop_sent:
            self._drain_all()
        self._reap(now)
        self._snapshots.prune({self._file, *(child.config_file for child in self._live())})
        if self._stopping:
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

    def _reap(self, now: float) -> None:
        for slot in self.slots.values():
            child = slot.child
            code = None if child is None else child.poll()
            if child is None or code is None:
                continue
            slot.child = None
            if child.stopping or self._stopping:
                log.info("%s (pid %d) stopped with exit code %d", child.spec.label, child.pid, code)
            else:
                self._crashed(slot, child, code, now)
        for child in list(self.draining):
            code = child.poll()
            if code is not None:
                self.draining.remove(child)
                log.info("%s (pid %d) drained, exit code %d", child.spec.label, child.pid, code)

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
        what = "task code" if code else self.config_path.name
        log.info("%s changed; validating", what)
        found = validated(self.config_path)
        if found is None or not self._acceptable(found[0]):
            return
        config, text = found
        try:
            specs = wanted(config, self._selection)
        except UsageError as exc:
            log.error("reload refused, the running generation keeps going: %s", exc)
            return
        current = {key: slot.spec for key, slot in self.slots.items()}
        change = diff(current, specs)
        if code:
            change = restart_workers(change, specs)
        self._metrics = follow_metrics(self._metrics, self.config, config)
        self.config = config
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

    def _acceptable(self, config: Config) -> bool:
        for role, url in (("broker", config.broker), ("result_backend", config.result_backend)):
            if process_local(url):
                log.error(
                    "reload refused: %s %s is memory:// (one process only); keeping the running "
                    "generation",
                    role,
                    mask_url(url),
                )
                return False
        missing = [name for name in self.options.only or () if name not in config.workers]
        if missing:
            log.warning("--only group(s) %s no longer declared", ", ".join(missing))
        return True

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

    def _drain_all(self) -> None:
        self._stop_sent = True
        self.draining += self.handovers.take_all()
        children = self._live()
        log.info("stopping: draining %d children (a second Ctrl-C kills them)", len(children))
        for child in children:
            child.drain()

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
        """SIGTERM/SIGINT stop gracefully, a second SIGINT at once; SIGHUP reloads."""

        def on_hup(signum: int) -> None:
            self._hup = True  # no lock here: the main thread may hold it
            self._waker.wake()

        def on_stop(signum: int) -> None:
            self.stop(graceful=not (signum == signal.SIGINT and self._stopping))

        stops = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop}
        return signals.install({**stops, signal.SIGHUP: on_hup})
