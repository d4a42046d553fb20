"""A YAML loader that refuses hostile documents while it composes them, before any value is built.

stem.yaml comes from people and tools that may be careless or hostile, and it is parsed by
every command and on every hot reload (docs/security.md, "Hostile configuration files"). Plain
PyYAML composes recursively (thousands of nested brackets end in a RecursionError), expands
aliases without limit (a 1 KB "billion laughs" file grows until memory runs out) and drops the
tag of a sequence or mapping silently. This loader bounds all three as the document is read:

- nesting: at most MAX_DEPTH collections inside one another, aliases included;
- size: at most MAX_NODES values, counting every alias as the values it repeats;
- tags: none at all. Every value must be plain YAML, typed by how it is written.
"""

from __future__ import annotations

import yaml

#: Collections (mappings, sequences) nested inside one another, aliases expanded.
MAX_DEPTH = 64
#: Keys, values and items in the whole document, each alias counted as what it repeats.
MAX_NODES = 100_000

Mark = tuple[int, int]  # 1-based line, column
#: What `!!` stands for in a tag.
STANDARD_PREFIX = "tag:yaml.org,2002:"


class YamlRefused(Exception):
    """The document is valid YAML but goes beyond what stem.yaml allows; `mark` is where."""

    def __init__(self, message: str, mark: Mark) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _where(event: yaml.Event) -> Mark:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class GuardedLoader(yaml.SafeLoader):
    """SafeLoader composing within MAX_DEPTH and MAX_NODES and refusing explicit tags.

    Raises YamlRefused from `get_single_node` (and yaml.YAMLError for invalid YAML).
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0  # collections enclosing the node being composed
        self._count = 0  # values composed so far, aliases counted expanded
        self._sizes: dict[int, int] = {}  # id(node) -> values in it, aliases expanded
        self._heights: dict[int, int] = {}  # id(node) -> collections nested in it, itself included

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event, parent, index)
        _refuse_tag(event)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection and self._depth + 1 > MAX_DEPTH:
            raise YamlRefused(_too_deep(), _where(event))
        self._add(1, event)
        before = self._count - 1
        self._depth += collection
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= collection
        if node is not None:
            self._sizes[id(node)] = self._count - before
            self._heights[id(node)] = _height(node, self._heights)
        return node

    def _alias(
        self, event: yaml.AliasEvent, parent: yaml.Node | None, index: int
    ) -> yaml.Node | None:
        target = self.anchors.get(event.anchor) if event.anchor is not None else None
        if target is not None:
            if id(target) not in self._sizes:
                # The anchored collection is still open: the alias sits inside what it names.
                message = f"alias *{event.anchor} is inside the collection it refers to"
                raise YamlRefused(message, _where(event))
            if self._depth + self._heights[id(target)] > MAX_DEPTH:
                message = _too_deep(f" once alias *{event.anchor} is expanded")
                raise YamlRefused(message, _where(event))
            self._add(self._sizes[id(target)], event, alias=event.anchor)
        return super().compose_node(parent, index)  # an undefined alias raises ComposerError

    def _add(self, values: int, event: yaml.Event, *, alias: str | None = None) -> None:
        self._count += values
        if self._count <= MAX_NODES:
            return
        if alias is None:
            why = f"; stem.yaml allows at most {MAX_NODES:,}"
        else:
            why = f" once alias *{alias} is expanded; refused as a possible alias bomb"
        message = (
            f"the file holds more than {MAX_NODES:,} values{why} "
            '(docs/security.md, "Hostile configuration files")'
        )
        raise YamlRefused(message, _where(event))


def _height(node: yaml.Node, heights: dict[int, int]) -> int:
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        return 0
    return 1 + max((heights[id(child)] for child in children), default=0)


def _refuse_tag(event: yaml.Event) -> None:
    tag = getattr(event, "tag", None)
    if tag is not None:
        shown = "!!" + tag.removeprefix(STANDARD_PREFIX) if tag.startswith(STANDARD_PREFIX) else tag
        message = (
            f"YAML tag '{shown}' is not allowed: stem.yaml takes plain values only (remove the "
            "tag; quote the value to make it a string)"
        )
        raise YamlRefused(message, _where(event))


def _too_deep(how: str = "") -> str:
    return (
        f"nested more than {MAX_DEPTH} levels deep{how}; stem.yaml allows at most {MAX_DEPTH} "
        '(docs/security.md, "Hostile configuration files")'
    )
