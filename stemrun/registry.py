"""Task name -> handler: import handlers from their `package.module:attribute` paths."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemrun.errors import HandlerImportError, TaskNotRegistered

if TYPE_CHECKING:  # a process-pool child loads handlers without loading the config model
    from stemrun.config.model import Config, TaskConfig

Handler = Callable[..., Any]


def ensure_import_path(root_dir: Path) -> None:
    """Make modules next to stem.yaml and in the working directory importable, as users expect."""
    for entry in (str(root_dir), str(Path.cwd())):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def load_handler(path: str) -> Handler:
    """Import `package.module:attribute` and return the callable.

    Raises HandlerImportError naming the path and what went wrong.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise HandlerImportError(f"handler {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary user code; report whatever it raised
        raise HandlerImportError(
            f"handler {path!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise HandlerImportError(
                f"handler {path!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from exc
    if not callable(target):
        raise HandlerImportError(f"handler {path!r} is not callable")
    return target  # type: ignore[no-any-return]


class Registry:
    """Resolves declared task names to their config and (lazily imported) handlers."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._handlers: dict[str, Handler] = {}
        ensure_import_path(config.root_dir)

    def task(self, name: str) -> TaskConfig:
        """The task's config. Raises TaskNotRegistered for an undeclared name."""
        try:
            return self._config.tasks[name]
        except KeyError:
            raise TaskNotRegistered(f"task {name!r} is not declared in stem.yaml") from None

    def handler(self, name: str) -> Handler:
        """The handler, imported on first use. Raises TaskNotRegistered, HandlerImportError."""
        handler = self._handlers.get(name)
        if handler is None:
            handler = load_handler(self.task(name).handler)
            self._handlers[name] = handler
        return handler
