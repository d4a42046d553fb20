"""Make the schedule store match the schedules declared in stem.yaml (the desired state).

Declared entries are added or updated in place (their run state kept); entries in the store that
are not declared are left alone unless `prune` is set. The result is a `ScheduleDiff` that says
what changed, with next fire times, so `schedule apply` can show it before doing it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from datetime import UTC, tzinfo
from typing import Any

from stemrun.config.model import Config, ScheduleConfig
from stemrun.errors import ScheduleStoreError, UsageError
from stemrun.schedules.spec import (
    Spec,
    at_instant,
    first_fire,
    next_fire,
    parse_spec,
    to_datetime,
    to_epoch,
)
from stemrun.schedules.spec import zone as parse_zone
from stemrun.schedules.store import DECLARED_FIELDS, ScheduleEntry, ScheduleStore

#: How often one entry's write is retried after losing a version race (to a beat advancing it).
MAX_ATTEMPTS = 5
_TIMING = ("spec", "timezone")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EntryChange:
    """One entry's change: `before` is the stored entry, `after` what it becomes (None: gone)."""

    name: str
    before: ScheduleEntry | None
    after: ScheduleEntry | None
    fields: tuple[str, ...] = ()  # the declared fields that differ (changed entries only)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, fields, before/after entries."""
        return {
            "name": self.name,
            "fields": list(self.fields),
            "before": None if self.before is None else self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleDiff:
    """Desired state vs the store: what is (or, for a dry run, would be) added/changed/removed."""

    added: tuple[EntryChange, ...] = ()
    changed: tuple[EntryChange, ...] = ()
    removed: tuple[EntryChange, ...] = ()
    unchanged: tuple[str, ...] = ()
    undeclared: tuple[str, ...] = ()  # stored but not declared, kept because prune was off
    applied: bool = False

    @property
    def has_changes(self) -> bool:
        """Whether anything is (or would be) written."""
        return bool(self.added or self.changed or self.removed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole diff."""
        return {
            "added": [c.to_dict() for c in self.added],
            "changed": [c.to_dict() for c in self.changed],
            "removed": [c.to_dict() for c in self.removed],
            "unchanged": list(self.unchanged),
            "undeclared": list(self.undeclared),
            "applied": self.applied,
        }


def apply_schedules(
    config: Config,
    store: ScheduleStore,
    *,
    schedules: Mapping[str, ScheduleConfig] | None = None,
    prune: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> ScheduleDiff:
    """Upsert the declared schedules (`schedules`, default `config.schedules`) into `store`.

    Raises UsageError for a schedule naming an undeclared task or queue, an invalid spec or zone
    (nothing is written then), ScheduleStoreError when the store fails.
    """
    declared = schedules if schedules is not None else config.schedules
    desired = {name: check_entry(config, ScheduleEntry.declared(s)) for name, s in declared.items()}
    moment = time.time() if now is None else now
    stored = {entry.name: entry for entry in store.entries()}
    added, changed, unchanged = _plan(desired, stored, moment)
    gone = [name for name in stored if name not in desired]
    removed = [EntryChange(name=n, before=stored[n], after=None) for n in gone] if prune else []
    if not dry_run:
        added = [_write(store, change, desired, moment) for change in added]
        changed = [_write(store, change, desired, moment) for change in changed]
        for change in removed:
            store.remove(change.name)
    return ScheduleDiff(
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(removed),
        unchanged=tuple(unchanged),
        undeclared=() if prune else tuple(gone),
        applied=not dry_run,
    )


def check_entry(config: Config, entry: ScheduleEntry) -> ScheduleEntry:
    """The entry, after checking its task, queue, zone and spec; raises UsageError."""
    where = f"schedule {entry.name!r}"
    if entry.task not in config.tasks:
        known = ", ".join(sorted(config.tasks)) or "none"
        raise UsageError(f"{where}: task {entry.task!r} is not declared (declared: {known})")
    queues = set(config.queues) | {config.default_queue}
    if entry.queue is not None and entry.queue not in queues:
        raise UsageError(f"{where}: queue {entry.queue!r} is not declared")
    try:
        parse_zone(entry.timezone)
        spec = parse_spec(entry.spec)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from exc
    if spec.every_s is not None and entry.jitter_s >= spec.every_s:
        raise UsageError(f"{where}: jitter must be shorter than the interval of {entry.spec!r}")
    return entry


def _plan(
    desired: Mapping[str, ScheduleEntry], stored: Mapping[str, ScheduleEntry], now: float
) -> tuple[list[EntryChange], list[EntryChange], list[str]]:
    added: list[EntryChange] = []
    changed: list[EntryChange] = []
    unchanged: list[str] = []
    for name in sorted(desired):
        change = plan_entry(desired[name], stored.get(name), now)
        if change is None:
            unchanged.append(name)
        elif change.before is None:
            added.append(change)
        else:
            changed.append(change)
    return added, changed, unchanged


def plan_entry(
    wanted: ScheduleEntry, current: ScheduleEntry | None, now: float
) -> EntryChange | None:
    """How `current` (None: not stored) becomes `wanted`; None when nothing differs."""
    if current is None:
        fresh = dataclasses.replace(wanted, version=0)
        return EntryChange(name=wanted.name, before=None, after=_armed(fresh, fresh, now))
    target = dataclasses.replace(wanted, enabled=wanted.enabled and not _spent(wanted, current))
    fields = tuple(f for f in DECLARED_FIELDS if getattr(target, f) != getattr(current, f))
    if not fields:
        return None
    merged = dataclasses.replace(current, **{f: getattr(target, f) for f in DECLARED_FIELDS})
    rearm = any(f in _TIMING for f in fields) or (merged.enabled and not current.enabled)
    after = _armed(merged, current, now) if rearm or not merged.enabled else merged
    return EntryChange(name=wanted.name, before=current, after=after, fields=fields)


def _armed(entry: ScheduleEntry, previous: ScheduleEntry, now: float) -> ScheduleEntry:
    """The entry with `next_run_at` set for its (new) spec, continuing from its last run."""
    if not entry.enabled:
        return dataclasses.replace(entry, next_run_at=None)
    return dataclasses.replace(entry, next_run_at=arm(entry, previous.last_run_at, now))


def arm(entry: ScheduleEntry, last_run_at: float | None, now: float) -> float | None:
    """When an entry (newly added, re-enabled or given a new spec) fires next, epoch seconds.

    `every:` fires at once if it never ran, else continues the grid of its last run; `at:`
    fires at its time, even a past one (once, at once), unless that fire already happened;
    cron fires at its next match. Raises ValueError for an invalid spec or zone.
    """
    tz = parse_zone(entry.timezone)
    spec = parse_spec(entry.spec)
    moment = to_datetime(now, UTC)
    if spec.kind == "every" and last_run_at is not None:
        upcoming = next_fire(spec, moment, tz, anchor=to_datetime(last_run_at))
    elif spec.kind == "every":
        return _grid_start(spec, now)
    elif spec.kind == "at" and last_run_at is not None and _fired(spec, tz, last_run_at):
        return None
    else:
        upcoming = first_fire(spec, moment, tz)
    return None if upcoming is None else to_epoch(upcoming)


def _grid_start(spec: Spec, now: float) -> float:
    # Whole seconds (or milliseconds for sub-second grids) keep fire ids readable.
    unit = 1.0 if (spec.every_s or 0.0) >= 1.0 else 0.001
    return math.floor(now / unit) * unit


def _fired(spec: Spec, tz: tzinfo, last_run_at: float) -> bool:
    return abs(to_epoch(at_instant(spec, tz)) - last_run_at) < 1e-6


def _spent(wanted: ScheduleEntry, current: ScheduleEntry) -> bool:
    """A one-shot `at:` that already fired for this very spec stays disabled on re-apply."""
    if current.last_run_at is None or (wanted.spec, wanted.timezone) != _timing(current):
        return False
    try:
        tz = parse_zone(wanted.timezone)
        spec = parse_spec(wanted.spec)
    except ValueError:
        return False
    return spec.kind == "at" and _fired(spec, tz, current.last_run_at)


def _timing(entry: ScheduleEntry) -> tuple[str, str]:
    return entry.spec, entry.timezone


def _write(
    store: ScheduleStore, change: EntryChange, desired: Mapping[str, ScheduleEntry], now: float
) -> EntryChange:
    """Store one change; on a lost version race, plan again from the fresh entry."""
    for _ in range(MAX_ATTEMPTS):
        if change.after is None:
            return change
        if change.before is None:
            written = store.add(change.after)
        else:
            written = store.update(change.after)
        if written is not None:
            return dataclasses.replace(change, after=written)
        fresh = plan_entry(desired[change.name], store.get(change.name), now)
        if fresh is None:
            return change  # someone else already made it so
        change = fresh
    raise ScheduleStoreError(
        f"schedule {change.name!r}: the entry kept changing under us; try `schedule apply` again"
    )


def set_enabled(
    store: ScheduleStore, name: str, enabled: bool, *, now: float | None = None
) -> ScheduleEntry | None:
    """Enable (re-armed from its last run) or disable one stored entry; None if unknown.

    Raises ScheduleStoreError when the store fails or the entry keeps changing under us.
    """
    moment = time.time() if now is None else now
    for _ in range(MAX_ATTEMPTS):
        current = store.get(name)
        if current is None:
            return None
        if current.enabled == enabled:
            return current
        toggled = dataclasses.replace(current, enabled=enabled)
        written = store.update(_armed(toggled, current, moment))
        if written is not None:
            return written
    raise ScheduleStoreError(f"schedule {name!r}: the entry kept changing under us; try again")
