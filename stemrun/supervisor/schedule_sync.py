"""Applying stem.yaml's schedules to the schedule store, at start and on every valid reload."""

from __future__ import annotations

import logging

from stemrun.config.model import Config
from stemrun.errors import StemrunError
from stemrun.schedules.apply import ScheduleDiff, apply_schedules
from stemrun.stores import schedule_store_for

log = logging.getLogger("stemrun.supervisor")


def apply(config: Config) -> ScheduleDiff | None:
    """Upsert the declared schedules (never pruning); failures are logged, not raised.

    Entries added with `stemrun schedule apply --file` are kept: only `schedule apply --prune`
    removes what stem.yaml does not declare.
    """
    if not config.schedules:
        return None
    try:
        store = schedule_store_for(config)
        try:
            diff = apply_schedules(config, store)
        finally:
            store.close()
    except StemrunError as exc:
        log.error("could not apply the schedules to %s: %s", config.schedule_store, exc)
        return None
    if diff.has_changes:
        log.info(
            "schedules applied: added %s; changed %s",
            ", ".join(c.name for c in diff.added) or "none",
            ", ".join(c.name for c in diff.changed) or "none",
        )
    return diff
