"""Spec parsing, next_fire and fires: cron (DST, OR rule, names, steps), every: grids, at:."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemrun.schedules.spec import fire_id, fires, first_fire, next_fire, parse_spec, zone

PARIS = zone("Europe/Paris")
NEW_YORK = zone("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


CRON_CASES = [
    # (spec, zone, after, expected next fire as ISO with offset)
    ("cron:0 8 * * *", "UTC", utc(2024, 1, 1, 7, 59), "2024-01-01T08:00:00+00:00"),
    # strictly after: a fire exactly at `after` is the one just done
    ("cron:0 8 * * *", "UTC", utc(2024, 1, 1, 8, 0), "2024-01-02T08:00:00+00:00"),
    # the zone decides the instant: 08:00 Paris is 07:00Z in winter, 06:00Z in summer
    ("cron:0 8 * * *", "Europe/Paris", utc(2024, 1, 10), "2024-01-10T08:00:00+01:00"),
    ("cron:0 8 * * *", "Europe/Paris", utc(2024, 7, 10), "2024-07-10T08:00:00+02:00"),
    # spring forward, Paris skips 02:00-03:00 on 2024-03-31: a skipped time fires at 03:00
    ("cron:30 2 * * *", "Europe/Paris", utc(2024, 3, 31, 0, 0), "2024-03-31T03:00:00+02:00"),
    ("cron:*/15 * * * *", "Europe/Paris", utc(2024, 3, 31, 0, 50), "2024-03-31T03:00:00+02:00"),
    ("cron:*/15 * * * *", "Europe/Paris", utc(2024, 3, 31, 1, 0), "2024-03-31T03:15:00+02:00"),
    # fall back, Paris repeats 02:00-03:00 on 2024-10-27: the repeated time fires once (first)
    ("cron:30 2 * * *", "Europe/Paris", utc(2024, 10, 26, 23), "2024-10-27T02:30:00+02:00"),
    ("cron:30 2 * * *", "Europe/Paris", utc(2024, 10, 27, 0, 30), "2024-10-28T02:30:00+01:00"),
    ("cron:0 * * * *", "Europe/Paris", utc(2024, 10, 27, 0, 0), "2024-10-27T03:00:00+01:00"),
    # from inside the second 02:xx, the second 02:15 does not fire again
    (
        "cron:*/15 * * * *",
        "Europe/Paris",
        datetime(2024, 10, 27, 2, 10, tzinfo=PARIS, fold=1),
        "2024-10-27T03:00:00+01:00",
    ),
    # New York: 2024-03-10 skips 02:00-03:00; 2024-11-03 repeats 01:00-02:00
    ("cron:30 2 * * *", "America/New_York", utc(2024, 3, 10, 5), "2024-03-10T03:00:00-04:00"),
    ("cron:30 1 * * *", "America/New_York", utc(2024, 11, 3, 4), "2024-11-03T01:30:00-04:00"),
    ("cron:30 1 * * *", "America/New_York", utc(2024, 11, 3, 5, 31), "2024-11-04T01:30:00-05:00"),
    # day-of-month OR day-of-week when both are restricted (Vixie cron): Friday or the 13th
    ("cron:0 0 13 * FRI", "UTC", utc(2024, 1, 1), "2024-01-05T00:00:00+00:00"),
    ("cron:0 0 13 * FRI", "UTC", utc(2024, 1, 12, 1), "2024-01-13T00:00:00+00:00"),
    ("cron:0 0 13 * *", "UTC", utc(2024, 1, 1), "2024-01-13T00:00:00+00:00"),
    # names, ranges, steps, Sunday as 7, leap day
    ("cron:0 9 * JAN,JUL MON", "UTC", utc(2024, 2, 1), "2024-07-01T09:00:00+00:00"),
    ("cron:0 12 * * MON-FRI", "UTC", utc(2024, 1, 5, 12), "2024-01-08T12:00:00+00:00"),
    ("cron:*/20 9-10 * * *", "UTC", utc(2024, 1, 1, 10, 40), "2024-01-02T09:00:00+00:00"),
    ("cron:*/20 9-10 * * *", "UTC", utc(2024, 1, 1, 9, 5), "2024-01-01T09:20:00+00:00"),
    ("cron:0 8 * * 7", "UTC", utc(2024, 1, 1), "2024-01-07T08:00:00+00:00"),
    ("cron:0 0 29 2 *", "UTC", utc(2024, 3, 1), "2028-02-29T00:00:00+00:00"),
]


@pytest.mark.parametrize(("spec", "tz", "after", "expected"), CRON_CASES)
def test_cron_next_fire(spec: str, tz: str, after: datetime, expected: str) -> None:
    assert next_fire(spec, after, zone(tz)).isoformat() == expected  # type: ignore[union-attr]


def test_a_day_in_paris_around_fall_back_fires_each_wall_time_once() -> None:
    start = datetime(2024, 10, 27, 0, 30, tzinfo=PARIS)
    shown = [d.strftime("%H:%M%z") for d in fires(parse_spec("cron:0 * * * *"), start, PARIS, 4)]
    # 02:00 happens twice this night; it fires once, then 03:00 comes two real hours later
    assert shown == ["01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100"]


def test_every_grid_is_anchored_at_the_first_fire() -> None:
    anchor = utc(2024, 1, 1, 10, 0, 0)
    assert next_fire("every:90s", utc(2024, 1, 1, 10, 4), anchor=anchor) == utc(
        2024, 1, 1, 10, 4, 30
    )
    # exactly on a grid point: that fire is the one just done
    assert next_fire("every:90s", utc(2024, 1, 1, 10, 4, 30), anchor=anchor) == utc(
        2024, 1, 1, 10, 6
    )
    # before the anchor, the grid starts at the anchor (its first fire)
    assert next_fire("every:90s", utc(2024, 1, 1, 9), anchor=anchor) == anchor


def test_every_is_absolute_time_across_dst() -> None:
    start = datetime(2024, 3, 31, 1, 30, tzinfo=PARIS)
    shown = [d.isoformat() for d in fires(parse_spec("every:1h"), start, PARIS, 3)]
    assert shown == [
        "2024-03-31T01:30:00+01:00",
        "2024-03-31T03:30:00+02:00",  # one real hour later: the wall clock skipped 02:xx
        "2024-03-31T04:30:00+02:00",
    ]


def test_sub_second_every_keeps_microsecond_exact_grid() -> None:
    anchor = utc(2024, 1, 1)
    after = anchor + timedelta(seconds=10.1)
    assert next_fire("every:250ms", after, anchor=anchor) == anchor + timedelta(seconds=10.25)


def test_at_fires_once_then_never() -> None:
    spec = "at:2030-01-01T09:00:00+01:00"
    assert next_fire(spec, utc(2029, 1, 1), PARIS) == utc(2030, 1, 1, 8)
    assert next_fire(spec, utc(2030, 1, 1, 8)) is None


def test_naive_at_is_wall_time_in_the_entry_zone() -> None:
    assert next_fire("at:2030-07-01T09:00", utc(2029, 1, 1), PARIS) == utc(2030, 7, 1, 7)


def test_at_in_the_past_fires_once_at_once_when_first_applied() -> None:
    past = parse_spec("at:2020-01-01T00:00:00Z")
    assert first_fire(past, utc(2024, 1, 1)) == utc(2020, 1, 1)  # due now: fires at once
    assert next_fire(past, utc(2024, 1, 1)) is None  # and never again


def test_first_fire_of_every_is_now_and_of_cron_the_next_match() -> None:
    now = utc(2024, 1, 1, 7, 30)
    assert first_fire(parse_spec("every:1h"), now) == now
    assert first_fire(parse_spec("cron:0 8 * * *"), now) == utc(2024, 1, 1, 8)


def test_fires_lists_a_past_at_once_as_beat_fires_it_and_nothing_once_spent() -> None:
    past = parse_spec("at:2020-01-01T09:00")  # naive: wall time in the entry's zone
    now = utc(2024, 1, 1)
    # beat fires a past `at:` once, at once, when first applied: dry-run shows that one fire
    assert fires(past, now, PARIS, 5) == [utc(2020, 1, 1, 8)]
    # an armed entry keeps it whatever `start` says; a fired one (its last run) has no more
    assert fires(past, now, PARIS, 5, anchor=utc(2020, 1, 1, 8)) == [utc(2020, 1, 1, 8)]
    assert fires(past, now, PARIS, 5, last_run=utc(2020, 1, 1, 8)) == []
    # a last run of an earlier spec does not spend this one
    assert fires(past, now, PARIS, 5, last_run=utc(2019, 6, 1)) == [utc(2020, 1, 1, 8)]


def test_fires_start_at_start_or_continue_the_anchor_grid() -> None:
    start = utc(2024, 1, 1, 10, 0, 20)
    # a new `every:` grid starts at `start`; an armed one stays on its own grid
    assert fires(parse_spec("every:1m"), start, UTC, 2) == [start, start + timedelta(minutes=1)]
    anchored = fires(parse_spec("every:1m"), start, UTC, 2, anchor=utc(2024, 1, 1, 9, 0, 30))
    assert anchored == [utc(2024, 1, 1, 10, 0, 30), utc(2024, 1, 1, 10, 1, 30)]
    # from the anchor itself (no --from): the anchor is the first fire, even when overdue
    assert fires(parse_spec("every:1m"), start, UTC, 1, anchor=start) == [start]
    # cron: a match exactly at `start` is listed
    daily = fires(parse_spec("cron:0 8 * * *"), utc(2024, 1, 1, 8), UTC, 2)
    assert daily == [utc(2024, 1, 1, 8), utc(2024, 1, 2, 8)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0 8 * * *", "must start with 'cron:', 'every:' or 'at:'"),
        ("daily:08:00", "must start with 'cron:', 'every:' or 'at:'"),
        ("cron:0 8 * *", "must have exactly 5 fields"),
        ("cron:0 0 8 * * *", "must have exactly 5 fields"),
        ("cron:61 * * * *", "invalid cron expression '61 * * * *'"),
        ("cron:0 8 * * FUNDAY", "invalid cron expression"),
        ("cron:*/0 * * * *", "invalid cron expression"),
        ("cron:0 0 31 2 *", "never fires"),
        ("every:soon", "invalid every: interval"),
        ("every:0s", "must be longer than 0"),
        ("every:-5s", "invalid every: interval"),
        ("at:tomorrow", "is not an ISO-8601 datetime"),
        ("at:2024-13-01T00:00", "is not an ISO-8601 datetime"),
    ],
)
def test_invalid_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        parse_spec(spec)


def test_unknown_zone_and_naive_after_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")
    with pytest.raises(ValueError, match="needs a timezone"):
        next_fire("every:1s", datetime(2024, 1, 1))


def test_fire_id_is_the_scheduled_utc_time() -> None:
    paris_8am = datetime(2024, 1, 10, 8, 0, tzinfo=PARIS)
    assert fire_id("digest", paris_8am) == "sched:digest:2024-01-10T07:00:00Z"
    assert fire_id("fast", utc(2024, 1, 1) + timedelta(milliseconds=250)) == (
        "sched:fast:2024-01-01T00:00:00.250Z"
    )


CRONS = ["0 8 * * *", "*/15 * * * *", "30 2 * * *", "0 0 13 * FRI", "5 1,2,3 * * SUN"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=200, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    tz_name=st.sampled_from(ZONES),
    after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
)
def test_cron_fires_are_strictly_increasing_and_never_repeat_a_wall_time(
    cron: str, tz_name: str, after: datetime
) -> None:
    tz = zone(tz_name)
    start = after.replace(tzinfo=UTC)
    first = next_fire(f"cron:{cron}", start, tz)
    assert first is not None and first > start
    second = next_fire(f"cron:{cron}", first, tz)
    assert second is not None and second > first
    assert second.replace(tzinfo=None) != first.replace(tzinfo=None)
    # nothing fires in between: asking from just before `second` gives `second` again
    just_before = second.astimezone(UTC) - timedelta(microseconds=1)
    assert next_fire(f"cron:{cron}", just_before, tz) == second
