"""Turn interpolated strings into numbers or booleans where the schema wants one.

`${VAR}` always yields a string. So that `max_retries: ${RETRIES:-3}` or `timeout: ${T:-10}`
work, a value that came from interpolation is converted when the schema accepts an integer, a
number or a boolean at its path and the string reads as one (`"3"`, `"1.5"`, `"true"`,
`"false"`, `"1"`, `"0"`).
Strings the user wrote literally, and interpolated strings where only a string is allowed (such
as signing keys or task args), are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from stemrun.config.problem import YamlPath
from stemrun.config.schema import subschema

_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def coerce(data: Any, paths: Iterable[YamlPath]) -> Any:
    """`data` with the values at `paths` converted to the type the schema expects there."""
    for path in sorted(paths, key=len):
        data = _replace(data, path)
    return data


def _convert(value: Any, path: YamlPath) -> Any:
    if not isinstance(value, str):
        return value
    types = subschema(path).get("type", [])
    types = [types] if isinstance(types, str) else types
    text = value.strip()
    if "integer" in types and _INTEGER.match(text):
        return int(text)
    if "number" in types and _NUMBER.match(text):
        number = float(text)
        return int(number) if number.is_integer() and _INTEGER.match(text) else number
    if "boolean" in types and text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    return value


def _replace(data: Any, path: YamlPath) -> Any:
    """Convert the value at `path` in place, when the path exists."""
    if not path:
        return _convert(data, path)
    parent = data
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return data
    last = path[-1]
    try:
        parent[last] = _convert(parent[last], path)
    except (KeyError, IndexError, TypeError):
        pass
    return data
