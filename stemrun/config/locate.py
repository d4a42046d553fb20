"""Parse YAML text keeping where every key and value is, so problems can say `FILE:LINE:COL`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from stemrun.config.problem import Problem, YamlPath
from stemrun.config.yaml_limits import GuardedLoader, YamlRefused

Mark = tuple[int, int]  # 1-based line, column


class YamlSyntaxError(Exception):
    """The text is not valid YAML; `mark` is where the parser gave up."""

    def __init__(self, message: str, mark: Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


@dataclass(slots=True)
class Locations:
    """Where each YAML path's key and value start in the file."""

    keys: dict[YamlPath, Mark] = field(default_factory=dict)
    values: dict[YamlPath, Mark] = field(default_factory=dict)

    def mark(self, path: YamlPath, *, at_key: bool = False) -> Mark | None:
        """The position of `path` (its key when `at_key`), else of its nearest located parent."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if at_key and prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return None


def _mark(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _syntax_error(exc: yaml.YAMLError) -> YamlSyntaxError:
    context_mark = getattr(exc, "context_mark", None)
    mark = getattr(exc, "problem_mark", None) or context_mark
    problem = getattr(exc, "problem", None) or str(exc)
    if "<stream end>" in problem and context_mark is not None:
        # The file ended inside an unclosed construct: point at where that construct starts.
        mark = context_mark
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    where = (mark.line + 1, mark.column + 1) if mark is not None else None
    return YamlSyntaxError(message, where)


class _Builder:
    """Turns a composed node tree into plain data, recording marks and duplicate keys."""

    def __init__(self, loader: GuardedLoader) -> None:
        self.loader = loader
        self.locations = Locations()
        self.problems: list[Problem] = []
        self.merged: dict[int, int] = {}
        self.own_keys: set[YamlPath] = set()

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        self.locations.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:
            # Plain values that look like a date or a number but are none (2024-13-45).
            kind = str(node.tag).rpartition(":")[2]
            message = f"cannot read this value as a {kind}: {exc} (quote it to make it a string)"
            raise YamlSyntaxError(message, _mark(node)) from exc

    def _merged_count(self, node: yaml.MappingNode) -> int:
        """Flatten `<<: *anchor` merge keys; the merged pairs come first in `node.value`."""
        if id(node) not in self.merged:
            own = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)
            self.merged[id(node)] = len(node.value) - own
        return self.merged[id(node)]

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        merged = self._merged_count(node)
        result: dict[str, Any] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            # Keys are names (queues, tasks, ...): keep them as written, so `yes:` stays "yes".
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = (*path, key)
            if key in result and index >= merged and child in self.own_keys:
                first = self.locations.keys[child][0]
                message = f"duplicate key '{key}' (first defined on line {first})"
                self.problems.append(Problem(path=child, message=message, mark=_mark(key_node)))
                continue
            if index >= merged:
                self.own_keys.add(child)
            self.locations.keys[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        return result


@dataclass(slots=True)
class Document:
    """Parsed config data, where each path is, and problems found while parsing."""

    data: Any
    locations: Locations = field(default_factory=Locations)
    problems: list[Problem] = field(default_factory=list)


def parse_yaml(text: str) -> Document:
    """The document's data, where each path is, and duplicate-key problems.

    Raises YamlSyntaxError when the text is not valid YAML, or goes beyond what stem.yaml allows
    (nesting, size with aliases expanded, tags: see stemrun.config.yaml_limits).
    """
    loader = GuardedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, Locations(values={(): (1, 1)}))
        builder = _Builder(loader)
        data = builder.build(node, ())
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from exc
    except YamlRefused as exc:
        raise YamlSyntaxError(exc.message, exc.mark) from exc
    finally:
        loader.dispose()
    return Document(data, builder.locations, builder.problems)
