"""The dependency direction of STYLE.md holds: lower layers never import higher ones, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import stemrun

PACKAGE = Path(stemrun.__file__).parent

# Lowest first. A module may import its own layer or lower ones (brokers/backends excepted).
LAYERS: list[set[str]] = [
    {"errors", "clock", "state", "url", "supervision"},
    {
        "config",
        "envelope",
        "signing",
        "tls",
        "logs",
        "sqlite_db",
        "redis_keys",
        "redis_client",
        "postgres_db",
        "flow",
    },
    {"brokers", "backends"},
    {"retry", "registry", "canvas", "client", "context", "stores"},
    {"worker", "schedules", "beat", "observe", "metrics", "health"},
    {"supervisor", "cli", "dashboard", "__main__", "testing"},
]


def _top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _layer(top: str) -> int:
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"stemrun.{top} is not placed in a layer in {__file__}")


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t.startswith("stemrun.") or t == "stemrun"}
    return graph


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for module, targets in _imports().items():
        if module == "stemrun":
            continue  # the public API re-exports from every layer
        source = _top(module)
        for target in targets:
            if target == "stemrun":
                continue
            dest = _top(target)
            if _layer(dest) > _layer(source) or {source, dest} == {"brokers", "backends"}:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_nothing_imports_the_cli() -> None:
    users = [
        m
        for m, targets in _imports().items()
        if _top(m) != "cli"
        and m != "stemrun.__main__"
        and any(t.count(".") and _top(t) == "cli" for t in targets)
    ]
    assert users == []


def test_no_import_cycles_between_top_level_modules() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        if module == "stemrun":
            continue
        src = _top(module)
        edges.setdefault(src, set()).update(
            _top(t) for t in targets if t != "stemrun" and _top(t) != src
        )
    seen: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in seen:
            return
        for nxt in edges.get(node, ()):
            visit(nxt, (*path, node))
        seen.add(node)

    for start in edges:
        visit(start, ())
