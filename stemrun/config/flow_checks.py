"""Checks of the flow-control keys the schema cannot express: zero rates and key templates."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from stemrun.config.problem import Problem, YamlPath
from stemrun.errors import UsageError
from stemrun.flow import parse_rate, template_fields

_RATE = re.compile(r"^[0-9]+/(s|m|h)$")


def check_flow(data: dict[str, Any]) -> Iterator[Problem]:
    """Problems in every `rate_limit` (queues and tasks) and `unique.key`."""
    for section in ("queues", "tasks"):
        entries = data.get(section)
        for name, body in (entries if isinstance(entries, dict) else {}).items():
            if isinstance(body, dict):
                yield from _rate_limit((section, name, "rate_limit"), body.get("rate_limit"))
    tasks = data.get("tasks")
    for name, body in (tasks if isinstance(tasks, dict) else {}).items():
        unique = body.get("unique") if isinstance(body, dict) else None
        if isinstance(unique, dict):
            yield from _template(("tasks", name, "unique", "key"), unique.get("key"))


def _rate_limit(path: YamlPath, value: Any) -> Iterator[Problem]:
    if isinstance(value, dict):
        yield from _rate((*path, "rate"), value.get("rate"))
        yield from _template((*path, "key"), value.get("key"))
    else:
        yield from _rate(path, value)


def _rate(path: YamlPath, value: Any) -> Iterator[Problem]:
    if not isinstance(value, str) or not _RATE.match(value):
        return  # absent, the wrong type or shape: the schema reports that
    try:
        parse_rate(value)
    except UsageError as exc:
        yield Problem(path=path, message=str(exc))


def _template(path: YamlPath, value: Any) -> Iterator[Problem]:
    if not isinstance(value, str):
        return
    try:
        template_fields(value)
    except UsageError as exc:
        yield Problem(path=path, message=str(exc))
