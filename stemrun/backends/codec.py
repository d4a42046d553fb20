"""Status records as JSON text, the stored form shared by every result backend.

Faster than `StatusRecord.to_dict()` (which deep-copies through `dataclasses.asdict`): the
encoder reads the fields directly and lets `json` walk the nested values once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from stemrun.backends.record import StatusRecord
from stemrun.errors import BackendError
from stemrun.state import TaskState
from stemrun.telemetry import Heartbeat

_FIELDS = tuple(f.name for f in dataclasses.fields(StatusRecord))
_FIELD_SET = frozenset(_FIELDS)


def encode_record(record: StatusRecord) -> str:
    """The record as compact JSON.

    Raises BackendError naming the task when a value (args, result, meta) is not JSON.
    """
    data = {name: getattr(record, name) for name in _FIELDS}
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BackendError(
            f"task {record.id}: its status record is not JSON serialisable ({exc}); "
            "args, results and meta must be JSON values"
        ) from exc


def decode_record(text: str | bytes) -> StatusRecord:
    """The record stored as `text`; raises BackendError when the text is corrupt."""
    try:
        data: dict[str, Any] = json.loads(text)
        if not _FIELD_SET.issuperset(data):
            data = {k: v for k, v in data.items() if k in _FIELD_SET}
        data["state"] = TaskState(data["state"])
        return StatusRecord(**data)
    except (TypeError, ValueError, KeyError) as exc:
        raise BackendError(f"a stored status record is unreadable: {exc}") from exc


def encode_heartbeat(beat: Heartbeat, now: float) -> str:
    """A worker heartbeat as kept at `now`, as JSON.

    Raises BackendError naming the worker when a value in it is not JSON.
    """
    try:
        return json.dumps(beat.with_last_heartbeat(now).to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"worker {beat.id}: heartbeat is not JSON ({exc})") from exc


def decode_heartbeats(texts: Iterable[str | bytes | None]) -> list[Heartbeat]:
    """The readable heartbeats among `texts`, ordered by worker id (a corrupt one is skipped:
    one bad record must not hide every other worker)."""
    beats = []
    for text in texts:
        try:
            beats.append(Heartbeat.from_dict(json.loads(text or "null")))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return sorted(beats, key=lambda beat: beat.id)
