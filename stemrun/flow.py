"""Flow control, the pure parts: rates (`N/s|m|h`), key templates, unique claims, carried slots.

Key templates name fields of one task invocation: `{task}`, `{args.NAME}` and `{headers.NAME}`
(dots reach into nested objects: `{args.user.id}`); `{{` and `}}` write literal braces. A string
value renders as itself, any other value as compact JSON (so `7` and `"7"` give the same key).

A rate-limited delivery that must wait for its slot is handed back to the broker due a little
before the slot, carrying the slot in its delivery metadata (outside the signed core, next to
`attempt` and `eta`): when it comes back it starts at that slot without reserving a second one.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stemrun.envelope import Envelope, with_delivery
from stemrun.errors import DecodeError, UsageError

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_SCOPES = ("args", "headers")
#: Outer envelope field holding a reserved rate slot: {"attempt", "eta", "slot"}.
SLOT_FIELD = "rate_slot"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` starts per `period_s`, spaced evenly."""

    count: int
    period_s: float

    @property
    def interval_s(self) -> float:
        """The spacing between two starts."""
        return self.period_s / self.count


def parse_rate(text: str) -> Rate:
    """`10/s`, `100/m` or `5/h` -> Rate. Raises UsageError for anything else (or a zero rate)."""
    count, _, unit = str(text).strip().partition("/")
    if not count.isdigit() or unit not in _PERIODS:
        raise UsageError(f"rate {text!r} must look like '10/s', '100/m' or '5/h'")
    if int(count) < 1:
        raise UsageError(f"rate {text!r} must allow at least one start per period")
    return Rate(int(count), _PERIODS[unit])


def template_fields(template: str) -> list[tuple[str, ...]]:
    """The fields a key template names, as paths (`("args", "user_id")`, `("task",)`).

    Raises UsageError for a malformed template or a field other than task/args.X/headers.X.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"key template {template!r} is malformed: {exc}") from exc
    fields: list[tuple[str, ...]] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        path = tuple(name.split("."))
        valid = path == ("task",) or (path[0] in _SCOPES and len(path) > 1 and all(path))
        if spec or conversion or not valid:
            raise UsageError(
                f"key template {template!r}: {{{name}}} is not a field; use {{task}}, "
                "{args.NAME} or {headers.NAME}"
            )
        fields.append(path)
    return fields


def render_key(
    template: str,
    *,
    task: str,
    args: Mapping[str, Any],
    headers: Mapping[str, Any],
    strict: bool = True,
) -> str:
    """The key for one invocation.

    A missing arg or header raises UsageError when `strict`, else renders as empty. Raises
    UsageError for a malformed template too.
    """
    sources: dict[str, Any] = {"task": task, "args": args, "headers": headers}
    out: list[str] = []
    fields = iter(template_fields(template))
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(_value(sources, next(fields), template, task, strict))
    return "".join(out)


def _value(
    sources: Mapping[str, Any], path: tuple[str, ...], template: str, task: str, strict: bool
) -> str:
    value: Any = sources
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            if not strict:
                return ""
            raise UsageError(
                f"key template {template!r} of task {task!r} needs {'.'.join(path)}, "
                f"which this call does not pass"
            )
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class UniqueSpec(Protocol):
    """A task's `unique` option (stemrun.config.model.UniqueConfig)."""

    @property
    def key(self) -> str: ...

    @property
    def ttl_s(self) -> float: ...


def unique_key(unique: UniqueSpec, envelope: Envelope) -> str:
    """The stored unique key: the task name, then the rendered template. Raises UsageError."""
    rendered = render_key(
        unique.key, task=envelope.task, args=envelope.args, headers=envelope.headers
    )
    return f"{envelope.task}:{rendered}"


class UniqueStore(Protocol):
    """The result backend methods unique claims need (see stemrun.backends.base)."""

    def claim_unique(self, key: str, task_id: str, ttl_s: float, now: float) -> str | None: ...

    def release_unique(self, key: str, task_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """A unique key this producer took for a task id."""

    key: str
    task_id: str


def claim_all(
    store: UniqueStore,
    items: Sequence[tuple[UniqueSpec | None, Envelope]],
    now: float,
    finished: Callable[[str], bool],
) -> tuple[dict[int, str], list[Claim]]:
    """Claim the unique key of every item that has one, in order.

    Returns the duplicates (item index -> the id holding its key) and the claims taken by this
    call (to release if publishing fails). A key still held by a task `finished` says is done
    (its worker died between the terminal write and the release) is taken over. Raises
    UsageError for a template naming a missing field (nothing claimed) and BackendError.
    """
    keys = [(i, unique_key(u, env), u.ttl_s) for i, (u, env) in enumerate(items) if u]
    duplicates: dict[int, str] = {}
    taken: list[Claim] = []
    try:
        for index, key, ttl_s in keys:
            task_id = items[index][1].id
            holder = store.claim_unique(key, task_id, ttl_s, now)
            if holder not in (None, task_id) and finished(holder):
                store.release_unique(key, holder)
                holder = store.claim_unique(key, task_id, ttl_s, now)
            if holder is None:
                taken.append(Claim(key, task_id))
            elif holder != task_id:
                duplicates[index] = holder
    except BaseException:
        release_all(store, taken)
        raise
    return duplicates, taken


def release_all(store: UniqueStore, claims: Sequence[Claim]) -> None:
    """Give claims back (a failed publish). Raises BackendError."""
    for claim in claims:
        store.release_unique(claim.key, claim.task_id)


def with_slot(raw: bytes, *, attempt: int, eta: float, slot: float) -> bytes:
    """`raw` due at `eta`, carrying its reserved start `slot`. Raises DecodeError."""
    outer = json.loads(with_delivery(raw, attempt=attempt, eta=eta))
    outer[SLOT_FIELD] = {"attempt": attempt, "eta": eta, "slot": slot}
    return json.dumps(outer, separators=(",", ":")).encode()


def carried_slot(raw: bytes, envelope: Envelope) -> float | None:
    """The slot `raw` carries, if it was reserved for this very delivery (same attempt and eta).

    A retry or a replay rewrites attempt/eta, so a slot left over from an earlier delivery is
    ignored rather than trusted.
    """
    try:
        marker = json.loads(raw).get(SLOT_FIELD)
    except (ValueError, UnicodeDecodeError, AttributeError, DecodeError):
        return None
    if not isinstance(marker, dict) or envelope.eta is None:
        return None
    same = marker.get("attempt") == envelope.attempt and marker.get("eta") == envelope.eta
    slot = marker.get("slot")
    return float(slot) if same and isinstance(slot, int | float) else None
