"""Jinja2 filters of the dashboard's templates: times, ages, JSON. Output is escaped by Jinja."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def timestamp(value: Any) -> str:
    """Epoch seconds as `YYYY-MM-DD HH:MM:SS` UTC; a dash for none."""
    if value is None or value == "":
        return "—"
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return str(value)


def seconds(value: Any) -> str:
    """A duration in seconds as `850ms`, `12.3s`, `4m05s` or `2h03m`."""
    if value is None:
        return "—"
    s = float(value)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def pretty(value: Any) -> str:
    """Any JSON value, indented (as text: the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


FILTERS = {"ts": timestamp, "secs": seconds, "pretty": pretty}
