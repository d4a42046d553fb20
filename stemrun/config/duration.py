"""Durations as users write them (`"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"1d"`, `30`) -> seconds."""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`: a number of seconds, a numeric string, or a number with a unit.

    Raises ValueError when the value is negative, not finite, or not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '10s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError(
                f"expected a duration like '250ms', '10s', '5m', '2h', '1d' or a number of "
                f"seconds, got {value!r}"
            )
        number, unit = match.groups()
        seconds = float(number) * UNIT_SECONDS[unit or "s"]
    else:
        raise ValueError(f"expected a duration like '10s', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds
