"""Args written in stem.yaml itself (schedules, workflow steps) against their task's payload limit.

An enqueue measures the exact message; here the message each call would make is estimated by
encoding it unsigned, so a schedule too large to ever fire is refused when the file loads (by
`validate`, `schedule apply` and `up`) rather than failing at every fire.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from stemrun.config.model import DEFAULT_MAX_PAYLOAD
from stemrun.config.problem import Problem, YamlPath
from stemrun.config.size import format_size, parse_size
from stemrun.envelope import Envelope, encode

#: Stands in for the id of the call's envelope: as long as a generated one.
_SAMPLE_ID = "0" * 32


def check_payloads(
    data: dict[str, Any], task_refs: Iterable[tuple[YamlPath, Any]]
) -> Iterator[Problem]:
    """A problem for each call whose args make a message over its task's `limits.max_payload`.

    `task_refs` are the paths of the `task` keys of schedules and workflow steps, with their values.
    """
    limits = _limits(data)
    for path, task in task_refs:
        call = _at(data, path[:-1])
        args = call.get("args") if isinstance(call, dict) else None
        if not isinstance(task, str) or task not in limits or not isinstance(args, dict):
            continue
        size = _message_size(task, args)
        if size is not None and size > limits[task]:
            message = (
                f"args make a message of {format_size(size)} ({size} bytes) for task {task!r}, "
                f"over its limit of {format_size(limits[task])} (limits.max_payload)"
            )
            yield Problem(path=(*path[:-1], "args"), message=message)


def _limits(data: dict[str, Any]) -> dict[str, int]:
    """Each task's limit in bytes; tasks whose limit the schema refuses are left out."""
    top = _limit(data, DEFAULT_MAX_PAYLOAD)
    tasks = data.get("tasks")
    found: dict[str, int] = {}
    for name, body in (tasks if isinstance(tasks, dict) else {}).items():
        limit = _limit(body, top) if top is not None and isinstance(body, dict) else None
        if limit is not None:
            found[name] = limit
    return found


def _limit(section: dict[str, Any], default: int | None) -> int | None:
    limits = section.get("limits")
    value = limits.get("max_payload") if isinstance(limits, dict) else None
    if value is None:
        return default
    try:
        return parse_size(value)
    except ValueError:
        return None  # the schema reports it


def _at(data: Any, path: YamlPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _message_size(task: str, args: dict[str, Any]) -> int | None:
    try:
        return len(encode(Envelope(id=_SAMPLE_ID, task=task, queue="default", args=args)))
    except (TypeError, ValueError):
        return None  # not JSON: the enqueue says so
