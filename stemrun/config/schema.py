"""The published JSON Schema (draft 2020-12) and validation of data against it."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemrun.config.messages import problems_from_error
from stemrun.config.problem import Problem, YamlPath

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).with_name("stem.schema.json")


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # heavy: paid by validating, not by importing

    return Draft202012Validator(_schema())


def load_schema() -> dict[str, Any]:
    """A fresh copy of the stem.yaml JSON Schema."""
    return copy.deepcopy(_schema())


def schema_problems(data: Any) -> list[Problem]:
    """Every way `data` breaks the schema, as human-readable problems."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(data):
        problems.extend(problems_from_error(error))
    return problems


def subschema(path: YamlPath) -> dict[str, Any]:
    """The schema that applies at `path` (`{}` when the schema leaves it unconstrained)."""
    root = _schema()
    node: dict[str, Any] = root
    for part in path:
        node = _resolve(root, node)
        if isinstance(part, int):
            child = node.get("items", {})
        else:
            child = node.get("properties", {}).get(part, node.get("additionalProperties", {}))
        node = child if isinstance(child, dict) else {}
    return _resolve(root, node)


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(root, target), **{k: v for k, v in node.items() if k != "$ref"}}
