"""`${VAR}` and `${VAR:-default}` in string values, resolved from the environment.

As in the shell, `${VAR:-default}` uses the default when VAR is unset or empty. `$${` writes a
literal `${`. Mapping keys are names and are never interpolated. The result of interpolation is
always a string; `coerce.py` turns it into a number or boolean where the schema wants one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stemrun.config.problem import Problem, YamlPath

_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


@dataclass(slots=True)
class Interpolation:
    """The interpolated data, its problems and the paths whose value came from the environment."""

    data: Any = None
    problems: list[Problem] = field(default_factory=list)
    paths: set[YamlPath] = field(default_factory=set)


def interpolate(data: Any, env: Mapping[str, str]) -> Interpolation:
    """Replace every environment reference in the string values of `data` (a new copy)."""
    result = Interpolation()
    result.data = _walk(data, (), env, result)
    return result


def _walk(value: Any, path: YamlPath, env: Mapping[str, str], result: Interpolation) -> Any:
    if isinstance(value, dict):
        return {key: _walk(item, (*path, key), env, result) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, (*path, i), env, result) for i, item in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _substitute(value, path, env, result)
    return value


def _substitute(text: str, path: YamlPath, env: Mapping[str, str], result: Interpolation) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        inner = match.group(1)
        reference = _REFERENCE.match(inner) if inner is not None else None
        if reference is None:
            result.problems.append(Problem(path=path, message=_malformed(token)))
            return token
        name, default = reference.groups()
        result.paths.add(path)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                result.problems.append(Problem(path=path, message=_unset(name)))
                return ""
            return str(default)
        return value

    return _TOKEN.sub(replace, text)


def _malformed(token: str) -> str:
    return (
        f"malformed environment reference '{token}': write ${{NAME}} or ${{NAME:-default}} "
        "(or $${ for a literal '${')"
    )


def _unset(name: str) -> str:
    return f"environment variable {name} is not set (use ${{{name}:-default}} to give a default)"
