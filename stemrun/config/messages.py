"""jsonschema errors rewritten as messages a person can act on."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stemrun.config.problem import Problem, YamlPath

if TYPE_CHECKING:
    from jsonschema import ValidationError

_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "nothing",
}
_DURATION_HINT = "a duration like '250ms', '10s', '5m', '2h', '1d' or a number of seconds"
_SIZE_HINT = "a size like '512KiB', '1MiB', '2MB' or a whole number of bytes"
_PATTERN_HINTS = {
    "^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$": _DURATION_HINT,
    "^[1-9][0-9]*(B|KB|MB|GB|KiB|MiB|GiB)$": _SIZE_HINT,
    "^[0-9]+/(s|m|h)$": "a rate like '10/s', '100/m' or '5/h'",
}


def describe(value: Any) -> str:
    """A short rendering of a YAML value for messages: `'five'`, `5`, `true`, `a list`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _path(error: ValidationError) -> YamlPath:
    return tuple(error.absolute_path)


def _expected(error: ValidationError) -> Any:
    """The schema keyword's value (jsonschema types it loosely)."""
    return error.validator_value


def _instance(error: ValidationError) -> Any:
    return error.instance


def _known_keys(error: ValidationError) -> list[str]:
    schema = error.schema
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return [str(key) for key in properties]


def _type(error: ValidationError) -> str:
    expected = _expected(error)
    if expected == ["number", "string"]:
        wanted = _DURATION_HINT
    elif expected == ["integer", "string"]:
        wanted = _SIZE_HINT
    elif isinstance(expected, list):
        wanted = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in expected)
    else:
        wanted = _TYPE_NAMES.get(str(expected), str(expected))
    message = f"expected {wanted}, got {describe(error.instance)}"
    if expected == "string" and not isinstance(error.instance, dict | list | None):
        message += " (put it in quotes to make it a string)"
    return message


def _enum(error: ValidationError) -> str:
    choices = ", ".join(str(choice) for choice in _expected(error))
    return f"must be one of: {choices} (got {describe(error.instance)})"


def _pattern(error: ValidationError) -> str:
    pattern = str(_expected(error))
    wanted = _PATTERN_HINTS.get(pattern, f"a string matching {pattern}")
    return f"expected {wanted}, got {describe(error.instance)}"


def _range(error: ValidationError) -> str:
    bound = "at least" if error.validator == "minimum" else "at most"
    return f"must be {bound} {_expected(error)}, got {describe(error.instance)}"


def _properties(error: ValidationError) -> str:
    names = ", ".join(_known_keys(error))
    if error.validator == "minProperties":
        return f"needs one of: {names}"
    present = " and ".join(f"'{key}'" for key in _instance(error))
    return f"must have exactly one of: {names} (got {present})"


_MESSAGES: dict[str, Callable[[ValidationError], str]] = {
    "type": _type,
    "enum": _enum,
    "pattern": _pattern,
    "minimum": _range,
    "maximum": _range,
    "minProperties": _properties,
    "maxProperties": _properties,
    "const": lambda e: f"must be {_expected(e)}, got {describe(e.instance)}",
    "minItems": lambda e: "must not be empty",
    "minLength": lambda e: "must not be empty",
}


def _unknown_keys(error: ValidationError) -> list[Problem]:
    known = _known_keys(error)
    problems = []
    for key in _instance(error):
        if key in known:
            continue
        message = f"unknown key '{key}'"
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean '{close[0]}'?)"
        elif known:
            message += f" (allowed: {', '.join(known)})"
        problems.append(Problem(path=(*_path(error), key), message=message, at_key=True))
    return problems


def _missing_keys(error: ValidationError) -> list[Problem]:
    return [
        Problem(path=_path(error), message=f"missing required key '{key}'", at_key=True)
        for key in _expected(error)
        if key not in _instance(error)
    ]


def problems_from_error(error: ValidationError) -> list[Problem]:
    """One or more problems for one jsonschema error."""
    if error.validator == "additionalProperties":
        return _unknown_keys(error)
    if error.validator == "required":
        return _missing_keys(error)
    message_for = _MESSAGES.get(str(error.validator))
    message = message_for(error) if message_for else error.message
    at_key = error.validator in {"minProperties", "maxProperties"}
    return [Problem(path=_path(error), message=message, at_key=at_key)]
