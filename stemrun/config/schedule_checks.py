"""Schedule specs parsed and checked: `cron:<5 fields>`, `every:<duration>`, `at:<ISO datetime>`.

The parser lives in the config layer so `stemrun validate` reports a bad spec at its YAML path;
`stemrun.schedules.spec` builds next-fire times on top of it.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal

from stemrun.config.duration import parse_duration
from stemrun.config.problem import Problem

SpecKind = Literal["cron", "every", "at"]
KINDS: tuple[SpecKind, ...] = ("cron", "every", "at")


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """A parsed spec: a cron expression, an interval in seconds, or one datetime.

    `at` is as written: aware when it carries an offset, else naive (read in the entry's zone).
    """

    kind: SpecKind
    text: str  # as written, e.g. "cron:0 8 * * *"
    cron: str | None = None
    every_s: float | None = None
    at: datetime | None = None


def zone(name: str) -> tzinfo:
    """The IANA time zone `name`; raises ValueError for an unknown one."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like 'Europe/Paris' or 'UTC')"
        ) from exc


def parse_spec(text: str) -> Spec:
    """Parse `cron:<5 fields>`, `every:<duration>` or `at:<ISO-8601 datetime>`.

    Raises ValueError saying what is wrong and what a valid spec looks like.
    """
    kind, sep, body = text.partition(":")
    kind, body = kind.strip().lower(), body.strip()
    if not sep or kind not in KINDS:
        raise ValueError(
            f"spec {text!r} must start with 'cron:', 'every:' or 'at:' "
            "(e.g. 'cron:0 8 * * *', 'every:30s', 'at:2030-01-01T09:00:00+01:00')"
        )
    if kind == "cron":
        return Spec(kind="cron", text=text, cron=_check_cron(body))
    if kind == "every":
        return Spec(kind="every", text=text, every_s=_check_every(body))
    return Spec(kind="at", text=text, at=_check_at(body))


def _check_cron(body: str) -> str:
    fields = body.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {body!r} must have exactly 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    expression = " ".join(fields)
    # imported here: only a config with cron schedules pays for croniter (and dateutil)
    from croniter import CroniterBadDateError, CroniterError, croniter

    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError as exc:
        raise ValueError(f"cron expression {body!r} never fires") from exc
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid cron expression {body!r}: {exc}") from exc
    return expression


def _check_every(body: str) -> float:
    try:
        seconds = parse_duration(body)
    except ValueError as exc:
        raise ValueError(f"invalid every: interval: {exc}") from exc
    if seconds <= 0:
        raise ValueError(f"the every: interval must be longer than 0, got {body!r}")
    return seconds


def _check_at(body: str) -> datetime:
    try:
        return datetime.fromisoformat(body)
    except ValueError as exc:
        raise ValueError(
            f"at: {body!r} is not an ISO-8601 datetime (e.g. '2030-01-01T09:00:00+01:00')"
        ) from exc


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration(value)
    except ValueError:
        return None


def check_schedules(data: dict[str, Any]) -> Iterator[Problem]:
    """Invalid specs, and jitter that is not shorter than an `every:` interval."""
    entries = data.get("schedules")
    for name, entry in entries.items() if isinstance(entries, dict) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
            continue
        try:
            spec = parse_spec(entry["spec"])
        except ValueError as exc:
            yield Problem(path=("schedules", name, "spec"), message=str(exc))
            continue
        jitter = _seconds(entry.get("jitter", 0))
        if spec.every_s is not None and jitter is not None and jitter >= spec.every_s:
            message = (
                f"jitter ({entry['jitter']}) must be shorter than the interval of "
                f"{entry['spec']!r}, or fires would overtake each other"
            )
            yield Problem(path=("schedules", name, "jitter"), message=message)
