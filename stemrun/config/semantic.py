"""Checks the schema cannot express: cross-references, time limits, zones, signing keys.

They run on the interpolated, overlaid data (before defaults), skip values of the wrong type
(the schema reports those) and never import user code.
"""

from __future__ import annotations

import difflib
import math
import re
import zoneinfo
from collections.abc import Iterator
from typing import Any

from stemrun.config.duration import parse_duration
from stemrun.config.flow_checks import check_flow
from stemrun.config.payload_checks import check_payloads
from stemrun.config.problem import Problem, YamlPath
from stemrun.config.schedule_checks import check_schedules
from stemrun.config.signing_keys import check_signing

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*$")


def _entries(data: dict[str, Any], section: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, body) of each mapping entry of a top-level section."""
    entries = data.get(section)
    if isinstance(entries, dict):
        for name, body in entries.items():
            if isinstance(body, dict):
                yield name, body


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"declared: {', '.join(known) or 'none'}"


def declared_queues(data: dict[str, Any]) -> list[str]:
    """Keys of `queues`, plus `default_queue`, which is always declared."""
    queues = data.get("queues")
    names = list(queues) if isinstance(queues, dict) else []
    default = data.get("default_queue", "default")
    if isinstance(default, str) and default not in names:
        names.append(default)
    return names


def _queue_refs(data: dict[str, Any]) -> Iterator[tuple[YamlPath, Any]]:
    for name, task in _entries(data, "tasks"):
        if "queue" in task:
            yield ("tasks", name, "queue"), task["queue"]
    for name, group in _entries(data, "workers"):
        queues = group.get("queues")
        for index, queue in enumerate(queues if isinstance(queues, list) else []):
            yield ("workers", name, "queues", index), queue
    for name, entry in _entries(data, "schedules"):
        if "queue" in entry:
            yield ("schedules", name, "queue"), entry["queue"]


def _check_queues(data: dict[str, Any]) -> Iterator[Problem]:
    known = declared_queues(data)
    for path, queue in _queue_refs(data):
        if isinstance(queue, str) and queue not in known:
            hint = _suggest(queue, known)
            message = f"queue '{queue}' is not declared under queues ({hint})"
            yield Problem(path=path, message=message)


def _workflow_steps(name: str, body: dict[str, Any]) -> Iterator[tuple[YamlPath, Any]]:
    base: YamlPath = ("workflows", name)
    lists: list[tuple[YamlPath, Any]] = [
        ((*base, kind), body.get(kind)) for kind in ("chain", "group")
    ]
    chord = body.get("chord")
    if isinstance(chord, dict):
        lists.append(((*base, "chord", "body"), chord.get("body")))
        yield (*base, "chord", "callback"), chord.get("callback")
    for path, steps in lists:
        for index, step in enumerate(steps if isinstance(steps, list) else []):
            yield (*path, index), step


def _task_refs(data: dict[str, Any]) -> Iterator[tuple[YamlPath, Any]]:
    for name, entry in _entries(data, "schedules"):
        yield ("schedules", name, "task"), entry.get("task")
    for name, body in _entries(data, "workflows"):
        for path, step in _workflow_steps(name, body):
            if isinstance(step, dict):
                yield (*path, "task"), step.get("task")


def _check_tasks(data: dict[str, Any]) -> Iterator[Problem]:
    known = [name for name, _ in _entries(data, "tasks")]
    for path, task in _task_refs(data):
        if isinstance(task, str) and task and task not in known:
            hint = _suggest(task, known)
            yield Problem(path=path, message=f"task '{task}' is not declared under tasks ({hint})")


def _check_task_options(data: dict[str, Any]) -> Iterator[Problem]:
    for name, task in _entries(data, "tasks"):
        handler = task.get("handler")
        if isinstance(handler, str) and handler and not _HANDLER.match(handler):
            message = f"handler {handler!r} must look like 'package.module:attribute'"
            yield Problem(path=("tasks", name, "handler"), message=message)
        soft, hard = _seconds(task.get("soft_time_limit")), _seconds(task.get("hard_time_limit"))
        if soft is not None and hard is not None and soft > hard:
            message = (
                f"soft_time_limit ({task['soft_time_limit']}) is longer than hard_time_limit "
                f"({task['hard_time_limit']}); the soft limit must come first"
            )
            yield Problem(path=("tasks", name, "soft_time_limit"), message=message)


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _check_timezones(data: dict[str, Any]) -> Iterator[Problem]:
    for name, entry in _entries(data, "schedules"):
        zone = entry.get("timezone")
        if not isinstance(zone, str) or not zone:
            continue
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            message = f"unknown time zone {zone!r} (use an IANA name like 'Europe/Paris' or 'UTC')"
            yield Problem(path=("schedules", name, "timezone"), message=message)


def _check_finite(value: Any, path: YamlPath = ()) -> Iterator[Problem]:
    """YAML's `.inf` and `.nan` pass the schema's number checks but mean nothing here."""
    if isinstance(value, float) and not math.isfinite(value):
        yield Problem(path=path, message=f"must be a finite number, got {value}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _check_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _check_finite(item, (*path, index))


def check(data: Any) -> list[Problem]:
    """Every cross-reference and consistency problem in the (schema-shaped) data."""
    if not isinstance(data, dict):
        return []
    problems: list[Problem] = []
    checkers = (
        _check_finite,
        _check_queues,
        _check_tasks,
        _check_task_options,
        _check_timezones,
        check_schedules,
        check_flow,
    )
    for checker in checkers:
        problems.extend(checker(data))
    problems.extend(check_signing(data.get("signing")))
    problems.extend(check_payloads(data, _task_refs(data)))
    return problems
