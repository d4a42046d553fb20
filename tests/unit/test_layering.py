"""The dependency direction of docs/architecture.md holds: lower layers never import higher
ones, store contracts import no implementation, and no module imports itself round a circle."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import stemrun

PACKAGE = Path(stemrun.__file__).parent

# Lowest first. A module may import its own layer or lower ones (the store packages excepted).
LAYERS: list[set[str]] = [
    {"errors", "clock", "state", "url", "supervision", "signals", "telemetry"},
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
        "store_base",
        "sql_db",
    },
    {"brokers", "backends", "schedules"},
    {
        "retry",
        "registry",
        "canvas",
        "client",
        "context",
        "stores",
        "enqueue",
        "outbox",
        "shared_store",
    },
    {"worker", "beat", "observe", "metrics", "health"},
    {"supervisor", "cli", "dashboard", "__main__"},
]
#: The store packages move bytes for one role each and never import one another.
STORE_PACKAGES = {"brokers", "backends", "schedules"}
#: Contract modules: what callers program against. They import no implementation.
CONTRACTS = {"stemrun.brokers.base", "stemrun.backends.base", "stemrun.schedules.store"}


def _top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _layer(top: str) -> int:
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"stemrun.{top} is not placed in a layer in {__file__}")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _imports() -> dict[str, frozenset[str]]:
    """Module -> the stemrun modules it imports anywhere (functions and TYPE_CHECKING too)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from stemrun.worker import report` imports the submodule stemrun.worker.report
                subs = {f"{node.module}.{alias.name}" for alias in node.names}
                found = subs & modules.keys()
                targets.update(found or {node.module})
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = frozenset(t for t in targets if t.startswith("stemrun.") and t != name)
    return graph


def test_every_layer_entry_names_a_real_module() -> None:
    tops = {_top(module) for module in _imports()}
    assert set().union(*LAYERS) - tops == set()


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for module, targets in _imports().items():
        if module == "stemrun":
            continue  # the public API re-exports from every layer
        source = _top(module)
        for target in targets:
            dest = _top(target)
            other_store = source != dest and {source, dest} <= STORE_PACKAGES
            if _layer(dest) > _layer(source) or other_store:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_store_contracts_import_no_implementation() -> None:
    allowed_inside = {"base", "store", "record", "codec"}
    wrong = [
        f"{contract} -> {target}"
        for contract in CONTRACTS
        for target in _imports()[contract]
        if _top(target) in STORE_PACKAGES and target.rsplit(".", 1)[-1] not in allowed_inside
    ]
    assert wrong == []


def test_nothing_imports_the_cli() -> None:
    users = [
        module
        for module, targets in _imports().items()
        if _top(module) not in ("cli", "__main__") and any(_top(t) == "cli" for t in targets)
    ]
    assert users == []


def test_no_import_cycles_between_modules() -> None:
    """Any circle, inside a package too (a package's __init__ counts as a module)."""
    graph = _imports()
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path[path.index(node) :], node))}"
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, (*path, node))
        done.add(node)

    for start in sorted(graph):
        visit(start, ())
