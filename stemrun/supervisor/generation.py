"""Which children a Config wants, each with a fingerprint of the config it actually runs on.

A reload compares the children of the running generation with those of the new file by key:
a new key starts, a missing key drains, a key whose fingerprint changed restarts. A child's
fingerprint covers only what that child reads — its group, the queues it consumes and the tasks
routed to them, the stores — so an edit restarts exactly the children it affects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stemrun.config.model import Config
from stemrun.errors import UsageError
from stemrun.worker.plan import resolve

ChildKind = Literal["worker", "beat"]
BEAT_KEY = "beat"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """What the `up` command line asks for, beyond the file."""

    only: tuple[str, ...] | None = None  # --only groups
    beat: bool = True  # False with --no-beat or when beat is not installed
    log_level: str | None = None  # CLI overrides, handed to children
    log_format: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """One child the generation wants: a worker replica of a group, or the beat."""

    key: str  # "worker:<group>:<index>" or "beat"; stable across reloads
    kind: ChildKind
    group: str | None  # None: a worker with the default semantics (no `workers:` section)
    index: int = 0
    parts: tuple[tuple[str, str], ...] = ()  # (what, digest) of each input the child reads

    @property
    def fingerprint(self) -> str:
        """One digest over every part."""
        return _digest(self.parts)

    @property
    def label(self) -> str:
        """How log lines name this child."""
        if self.kind == "beat":
            return "beat"
        return f"worker {self.group or 'default'}#{self.index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What a reload does: start new keys, drain removed ones, restart changed ones."""

    start: tuple[ChildSpec, ...] = ()
    stop: tuple[ChildSpec, ...] = ()
    restart: tuple[ChildSpec, ...] = ()  # the new specs
    why: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # key -> changed parts

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.start or self.stop or self.restart)


def check_only(config: Config, only: Sequence[str] | None) -> None:
    """Raises UsageError naming the known groups when --only names an undeclared one."""
    unknown = [name for name in only or () if name not in config.workers]
    if unknown:
        known = ", ".join(sorted(config.workers)) or "none are declared"
        raise UsageError(f"--only: unknown worker group {unknown[0]!r} (known groups: {known})")


def wanted(config: Config, selection: Selection) -> dict[str, ChildSpec]:
    """Every child `config` asks for, by key. Raises UsageError (unresolvable group)."""
    specs: dict[str, ChildSpec] = {}
    process = _process_part(config, selection)
    for group in _groups(config, selection.only):
        parts = (("stores", _worker_stores(config)), process, *_group_parts(config, group))
        replicas = config.workers[group].replicas if group is not None else 1
        for index in range(replicas):
            key = f"worker:{group or ''}:{index}"
            specs[key] = ChildSpec(key=key, kind="worker", group=group, index=index, parts=parts)
    if selection.beat and config.beat.enabled and config.schedules:
        parts = (*_beat_parts(config), process)
        specs[BEAT_KEY] = ChildSpec(key=BEAT_KEY, kind="beat", group=None, parts=parts)
    return specs


def diff(old: Mapping[str, ChildSpec], new: Mapping[str, ChildSpec]) -> Change:
    """The change from the running generation `old` to `new`."""
    why: dict[str, tuple[str, ...]] = {}
    restart: list[ChildSpec] = []
    for key in old.keys() & new.keys():
        changed = _changed_parts(old[key], new[key])
        if changed:
            restart.append(new[key])
            why[key] = changed
    return Change(
        start=tuple(new[key] for key in sorted(new.keys() - old.keys())),
        stop=tuple(old[key] for key in sorted(old.keys() - new.keys())),
        restart=tuple(sorted(restart, key=lambda spec: spec.key)),
        why=why,
    )


def restart_workers(change: Change, new: Mapping[str, ChildSpec]) -> Change:
    """`change` plus a restart of every other worker in `new` (their task code changed)."""
    touched = {spec.key for spec in (*change.start, *change.restart)}
    extra = [s for k, s in sorted(new.items()) if s.kind == "worker" and k not in touched]
    why = dict(change.why) | {spec.key: ("code",) for spec in extra}
    return Change(start=change.start, stop=change.stop, restart=(*change.restart, *extra), why=why)


def _changed_parts(old: ChildSpec, new: ChildSpec) -> tuple[str, ...]:
    before, after = dict(old.parts), dict(new.parts)
    names = before.keys() | after.keys()
    return tuple(sorted(name for name in names if before.get(name) != after.get(name)))


def _groups(config: Config, only: Sequence[str] | None) -> list[str | None]:
    if not config.workers:
        return [None]
    return [name for name in config.workers if only is None or name in only]


def _group_parts(config: Config, group: str | None) -> tuple[tuple[str, str], ...]:
    """The group's resolved settings (replicas aside), its queues and the tasks routed there."""
    plan = resolve(config, group=group, name="-")
    settings = {
        "queues": plan.queues,
        "concurrency": plan.concurrency,
        "pool": plan.pool,
        "prefetch_multiplier": plan.prefetch_multiplier,
        "max_tasks_per_child": plan.max_tasks_per_child,
    }
    consumed = set(plan.queues)
    return (
        ("group", _digest(settings)),
        ("queues", _digest([config.queues.get(name) for name in plan.queues])),
        ("tasks", _tasks_digest(t for t in config.tasks.values() if t.queue in consumed)),
    )


def _beat_parts(config: Config) -> tuple[tuple[str, str], ...]:
    """Beat reads the schedule store and every task's options (a fire gets its task's options)."""
    stores = _digest([_worker_stores(config), config.schedule_store])
    return (
        ("stores", stores),
        ("beat", _digest(config.beat)),
        ("queues", _digest(config.queues)),
        ("tasks", _tasks_digest(config.tasks.values())),
    )


def _worker_stores(config: Config) -> str:
    return _digest(
        [config.broker, config.result_backend, config.namespace, config.signing, config.tls]
    )


def _process_part(config: Config, selection: Selection) -> tuple[str, str]:
    """Process-wide settings: the effective log level/format and the metrics port."""
    level = selection.log_level or config.logging.level
    fmt = selection.log_format or config.logging.format
    return ("process", _digest([level, fmt, config.metrics_port, config.default_queue]))


def _tasks_digest(tasks: Iterable[Any]) -> str:
    return _digest(sorted((_plain(task) for task in tasks), key=lambda task: str(task["name"])))


def _digest(value: Any) -> str:
    text = json.dumps(_plain(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
