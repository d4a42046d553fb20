"""Which queues, how many slots and which pool a worker runs: its group plus overrides."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from stemrun.config.model import DEFAULT_SHUTDOWN_TIMEOUT_S, Config, PoolKind
from stemrun.errors import UnknownQueue, UsageError

POOLS: tuple[PoolKind, ...] = ("process", "thread", "async")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A worker's resolved settings."""

    name: str
    group: str | None
    queues: tuple[str, ...]
    concurrency: int
    pool: PoolKind
    prefetch_multiplier: int
    max_tasks_per_child: int | None = None
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S

    @property
    def capacity(self) -> int:
        """How many deliveries the worker holds at most (running + buffered)."""
        return self.concurrency * self.prefetch_multiplier


def resolve(
    config: Config,
    *,
    group: str | None = None,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    pool: PoolKind | None = None,
    name: str | None = None,
) -> Plan:
    """The plan for group `group` (default: the group named `default`, else every queue).

    Raises UsageError for an unknown group, pool or bad concurrency, UnknownQueue for an
    undeclared queue.
    """
    plan = _from_group(config, group)
    chosen_queues = tuple(queues) if queues else plan.queues
    _check_queues(config, chosen_queues)
    chosen_pool = pool or plan.pool
    if chosen_pool not in POOLS:
        raise UsageError(f"unknown pool {chosen_pool!r}; expected one of: {', '.join(POOLS)}")
    chosen_concurrency = plan.concurrency if concurrency is None else concurrency
    if chosen_concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, got {chosen_concurrency}")
    return Plan(
        name=name or f"{socket.gethostname()}.{os.getpid()}",
        group=plan.group,
        queues=chosen_queues,
        concurrency=chosen_concurrency,
        pool=chosen_pool,
        prefetch_multiplier=max(1, plan.prefetch_multiplier),
        max_tasks_per_child=plan.max_tasks_per_child,
        shutdown_timeout_s=plan.shutdown_timeout_s,
    )


def _from_group(config: Config, group: str | None) -> Plan:
    name = group if group is not None else ("default" if "default" in config.workers else None)
    if name is None:
        return Plan(
            name="",
            group=None,
            queues=tuple(_declared_queues(config)),
            concurrency=os.cpu_count() or 1,
            pool="process",
            prefetch_multiplier=config.prefetch_multiplier,
        )
    found = config.workers.get(name)
    if found is None:
        known = ", ".join(sorted(config.workers)) or "none are declared"
        raise UsageError(f"unknown worker group {name!r} (known groups: {known})")
    return Plan(
        name="",
        group=found.name,
        queues=found.queues,
        concurrency=found.concurrency,
        pool=found.pool,
        prefetch_multiplier=found.prefetch_multiplier,
        max_tasks_per_child=found.max_tasks_per_child,
        shutdown_timeout_s=found.shutdown_timeout_s,
    )


def _declared_queues(config: Config) -> list[str]:
    if config.queues:
        return list(config.queues)
    names = [config.default_queue]
    names.extend(task.queue for task in config.tasks.values() if task.queue not in names)
    return names


def _check_queues(config: Config, queues: Sequence[str]) -> None:
    if not queues:
        raise UsageError("the worker has no queues to consume")
    declared = _declared_queues(config)
    unknown = [queue for queue in queues if queue not in declared]
    if unknown:
        raise UnknownQueue(
            f"queue {unknown[0]!r} is not declared in stem.yaml "
            f"(declared queues: {', '.join(declared)}); add it under `queues:`"
        )
