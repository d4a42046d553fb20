"""Schedule specs (`cron:`, `every:`, `at:`) and when they fire next; pure functions, no I/O.

Cron expressions are evaluated on local wall-clock time in the entry's IANA zone, then mapped to
instants. Two DST rules follow (documented in docs/scheduling.md):

- a wall-clock time that does not exist (spring forward) fires at the first valid instant after
  the gap, like Vixie cron: `30 2 * * *` fires at 03:00 on the day Paris skips 02:00-03:00;
- a wall-clock time that happens twice (fall back) fires once, at its first occurrence.

`every:` grids are absolute durations, so DST never moves them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from stemrun.config.schedule_checks import KINDS, Spec, SpecKind, parse_spec, zone

__all__ = [
    "KINDS",
    "Spec",
    "SpecKind",
    "at_instant",
    "fire_id",
    "fires",
    "first_fire",
    "next_fire",
    "parse_spec",
    "to_datetime",
    "to_epoch",
    "zone",
]

_MAX_CANDIDATES = 10_000  # cron matches skipped while stepping over a fall-back hour (~60 needed)
_MINUTE = timedelta(minutes=1)
_TICK = timedelta(microseconds=1)  # datetimes are exact to it: after `t - _TICK` = from `t` on
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at_instant(spec: Spec, tz: tzinfo) -> datetime:
    """The instant of an `at:` spec; a naive datetime is read as wall time in `tz`."""
    assert spec.at is not None
    return spec.at if spec.at.tzinfo is not None else _localize(spec.at, tz)


def next_fire(
    spec: Spec | str, after: datetime, tz: tzinfo = UTC, *, anchor: datetime | None = None
) -> datetime | None:
    """The first fire strictly after `after` (aware), in `tz`; None when it never fires again.

    `every:` fires on the grid `anchor + k * interval` (anchor default: `after`).
    Raises ValueError for an invalid spec or a naive `after`.
    """
    if after.tzinfo is None:
        raise ValueError(f"after={after.isoformat()} needs a timezone (UTC offset)")
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    # Arithmetic and comparisons between datetimes sharing one zone use wall time (ignoring
    # DST and fold), so everything below works on UTC instants.
    after = after.astimezone(UTC)
    if parsed.kind == "every":
        assert parsed.every_s is not None
        start = after if anchor is None else anchor.astimezone(UTC)
        return _next_on_grid(parsed.every_s, after, start).astimezone(tz)
    if parsed.kind == "at":
        moment = at_instant(parsed, tz)
        return moment.astimezone(tz) if moment > after else None
    assert parsed.cron is not None
    return _next_cron(parsed.cron, after, tz)


def _next_on_grid(interval_s: float, after: datetime, anchor: datetime) -> datetime:
    step = timedelta(seconds=interval_s)
    if anchor > after:
        return anchor  # the grid starts at its anchor, the entry's first fire
    return anchor + step * ((after - anchor) // step + 1)


def _next_cron(expression: str, after: datetime, tz: tzinfo) -> datetime:
    # imported here: only cron schedules pay for croniter (and dateutil), not every command
    from croniter import croniter

    wall = after.astimezone(tz).replace(tzinfo=None)
    matches = croniter(expression, wall)
    for _ in range(_MAX_CANDIDATES):
        candidate = _localize(matches.get_next(datetime), tz)
        # In a fall-back hour a wall time maps to its first occurrence, which may lie before
        # `after` (itself in the second occurrence): those are skipped, never fired twice.
        if candidate.astimezone(UTC) > after:
            return candidate
    raise ValueError(f"cron expression {expression!r} found no fire after {after.isoformat()}")


def _exists(wall: datetime, tz: tzinfo) -> bool:
    aware = wall.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def _localize(wall: datetime, tz: tzinfo) -> datetime:
    """The instant of a naive wall time: its first occurrence, or the end of a DST gap."""
    shifted = wall
    while not _exists(shifted, tz):
        # Gaps start and end on whole minutes in every modern zone; a day bounds the walk.
        shifted = (shifted + _MINUTE).replace(second=0, microsecond=0)
        if shifted - wall > timedelta(days=1):
            raise ValueError(f"{wall.isoformat()} does not exist in {tz}")
    return shifted.replace(tzinfo=tz, fold=0)


def first_fire(spec: Spec, now: datetime, tz: tzinfo = UTC) -> datetime | None:
    """When a newly applied entry fires first: `every:` at once, `at:` at its time even if
    past (so it fires once, at once), cron at its next match.

    Raises ValueError for a naive `now`.
    """
    if now.tzinfo is None:
        raise ValueError(f"now={now.isoformat()} needs a timezone (UTC offset)")
    if spec.kind == "every":
        return now.astimezone(tz)
    if spec.kind == "at":
        return at_instant(spec, tz).astimezone(tz)
    return next_fire(spec, now, tz)


def fires(
    spec: Spec,
    start: datetime,
    tz: tzinfo,
    count: int,
    *,
    anchor: datetime | None = None,
    last_run: datetime | None = None,
) -> list[datetime]:
    """The first `count` fires at or after `start`, in `tz`, as beat makes them.

    `every:` keeps the grid through `anchor` (a stored entry's next run), else starts one at
    `start`. An `at:` fires once at its instant even when that is past (beat fires a past `at:`
    at once, docs/scheduling.md), and never again once that instant is the entry's `last_run`.
    Raises ValueError for a naive `start`.
    """
    if spec.kind == "at":
        once = first_fire(spec, start, tz)
        spent = last_run is not None and once == last_run
        return [] if spent or once is None or count < 1 else [once]
    out: list[datetime] = []
    current = next_fire(spec, start - _TICK, tz, anchor=anchor or start)
    while current is not None and len(out) < count:
        out.append(current)
        current = next_fire(spec, current, tz, anchor=current)
    return out


def to_datetime(epoch_s: float, tz: tzinfo = UTC) -> datetime:
    """Epoch seconds -> an aware datetime in `tz` (exact to the microsecond)."""
    return (_EPOCH + timedelta(microseconds=round(epoch_s * 1_000_000))).astimezone(tz)


def to_epoch(moment: datetime) -> float:
    """An aware datetime -> epoch seconds."""
    return (moment - _EPOCH) / timedelta(seconds=1)


def fire_id(name: str, scheduled: datetime) -> str:
    """The deterministic task id of one fire: `sched:{name}:{scheduled UTC ISO time}`."""
    utc = scheduled.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond else "seconds"
    return f"sched:{name}:{utc.replace(tzinfo=None).isoformat(timespec=spec)}Z"
