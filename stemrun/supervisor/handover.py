"""Make before break: a replaced worker keeps serving until its replacement serves.

A worker takes a second or more to start (imports, pool processes). Draining the old child at
once would leave its queues unserved meanwhile, so the old child is drained only when the new
one has published its first heartbeat (same name and pid) in the result backend, when the slot
was removed, or after `READY_TIMEOUT_S` (a replacement that cannot start must not pin the old
generation forever).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from stemrun.backends.base import ResultBackend, Telemetry
from stemrun.config.model import Config
from stemrun.errors import BackendError
from stemrun.store_base import require
from stemrun.stores import backend_for
from stemrun.supervisor.children import Child

log = logging.getLogger("stemrun.supervisor")

READY_TIMEOUT_S = 30.0
CHECK_EVERY_S = 0.2  # how often pending handovers look for heartbeats


@dataclass(slots=True, kw_only=True)
class Handover:
    """An old child waiting for the slot `key`'s new child to serve."""

    key: str
    old: Child
    deadline: float


class Handovers:
    """The pending handovers and the heartbeat lookups that complete them."""

    def __init__(self) -> None:
        self.pending: list[Handover] = []
        self._config: Config | None = None
        self._backend: ResultBackend | None = None
        self._next_check = 0.0

    def use(self, config: Config) -> None:
        """Read heartbeats from `config`'s result backend from now on."""
        if self._config is not None and _stores(self._config) == _stores(config):
            return
        self.close()
        self._config = config

    def add(self, key: str, old: Child, now: float) -> None:
        """Keep `old` serving until slot `key`'s new child serves."""
        self.pending.append(Handover(key=key, old=old, deadline=now + READY_TIMEOUT_S))

    def children(self) -> list[Child]:
        """The old children still serving."""
        return [handover.old for handover in self.pending]

    def take_all(self) -> list[Child]:
        """Give up waiting: every old child, to drain now (shutdown)."""
        children = self.children()
        self.pending.clear()
        return children

    def due(self, current: Mapping[str, Child | None], now: float) -> list[tuple[Child, str]]:
        """The old children to drain now, each with why; `current` maps live slots to children."""
        if not self.pending or now < self._next_check:
            return []
        self._next_check = now + CHECK_EVERY_S
        serving = self._serving([c for c in current.values() if c is not None])
        done: list[tuple[Child, str]] = []
        for handover in list(self.pending):
            why = _why(handover, current, serving, now)
            if why is not None:
                self.pending.remove(handover)
                done.append((handover.old, why))
        return done

    def close(self) -> None:
        """Close the backend connection (reopened on demand)."""
        if self._backend is not None:
            self._backend.close()
        self._backend = None

    def _serving(self, children: list[Child]) -> set[int]:
        """Pids of `children` with a heartbeat; on a store error, all of them (drain at once)."""
        if self._config is None:
            return {child.pid for child in children}
        try:
            if self._backend is None:
                self._backend = backend_for(self._config)
            beats = {(b.id, b.pid) for b in require(self._backend, Telemetry).workers()}
        except BackendError as exc:
            log.warning("cannot read worker heartbeats (%s); draining replaced workers now", exc)
            self.close()
            return {child.pid for child in children}
        return {child.pid for child in children if (child.name, child.pid) in beats}


def _why(
    handover: Handover, current: Mapping[str, Child | None], serving: set[int], now: float
) -> str | None:
    if handover.old.poll() is not None:
        return "it exited on its own"
    if handover.key not in current:
        return "its slot was removed"
    successor = current[handover.key]
    if successor is not None and successor.pid in serving:
        return f"its replacement pid {successor.pid} is serving"
    if now >= handover.deadline:
        return f"its replacement is not serving after {READY_TIMEOUT_S:.0f}s"
    return None


def _stores(config: Config) -> tuple[str, str, object]:
    return (config.result_backend, config.namespace, (config.tls, config.root_dir))
