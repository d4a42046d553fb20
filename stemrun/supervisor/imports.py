"""`python -m stemrun.supervisor.imports JSON`: import task handlers in a fresh interpreter.

A reload checks that the workers it would start can import their handlers (docs/supervisor.md).
The check runs here rather than in the supervisor: the supervisor never runs task code, and a
module it had imported once would hide a later edit that broke it. The argument is
`{"root": DIR, "handlers": {task: "package.module:attribute"}}`; stdout carries one JSON list of
problems, each naming the task (a handler printing while it is imported writes to stderr).
Exit code 0 when every handler imports, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stemrun.errors import HandlerImportError
from stemrun.registry import ensure_import_path, load_handler


def problems(root: Path, handlers: dict[str, str]) -> list[str]:
    """One line per task whose handler does not import, after making `root` importable."""
    ensure_import_path(root)
    found = []
    for task, path in handlers.items():
        try:
            load_handler(path)
        except HandlerImportError as exc:
            found.append(f"tasks.{task}.handler: {exc}")
    return found


def main(argv: list[str]) -> int:
    """Check the handlers named in `argv[0]`; print the problems as JSON on stdout."""
    request = json.loads(argv[0])
    out, sys.stdout = sys.stdout, sys.stderr  # only the verdict goes to stdout
    found = problems(Path(request["root"]), dict(request["handlers"]))
    out.write(json.dumps(found) + "\n")
    out.flush()
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
