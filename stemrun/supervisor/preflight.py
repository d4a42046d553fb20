"""Before a reload hands over: can the new generation open its stores and import its handlers?

A valid file can still describe a generation that cannot serve: a result backend in a Postgres
schema that does not exist, a broker on a port nobody listens on, a handler module that no
longer imports. Applying it would drain the healthy children for replacements that crash at
start. So the supervisor first opens each store whose settings changed and imports the handlers
of the tasks the started or restarted workers serve; any failure refuses the reload as an invalid
file is refused (docs/supervisor.md).

The checks run in the background, the stores in a thread and the imports in a fresh interpreter
(see `stemrun.supervisor.imports`), so the supervisor keeps restarting crashed children and
answering signals while a store takes its time to answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from stemrun.config.model import Config
from stemrun.health import ROLES, Target, check
from stemrun.supervisor.generation import Change
from stemrun.worker.plan import resolve

STORE_TIMEOUT_S = 5.0  # a store that has not opened and answered within this is refused
IMPORT_TIMEOUT_S = 60.0  # handlers importing heavy libraries take a while; a hang does not pass
IMPORTS_MODULE = "stemrun.supervisor.imports"


@dataclass(frozen=True, slots=True, kw_only=True)
class Checks:
    """What a reload must prove before it hands over."""

    stores: tuple[str, ...] = ()  # roles (stem.yaml keys) whose store changed
    handlers: Mapping[str, str] = field(default_factory=dict)  # task -> handler path

    @property
    def empty(self) -> bool:
        """Nothing to prove: the reload can be applied at once."""
        return not (self.stores or self.handlers)


def needed(old: Config, new: Config, change: Change) -> Checks:
    """The stores `new` opens differently from `old`, and the handlers of the tasks served by
    the workers `change` starts or restarts (beat imports no task code)."""
    stores = tuple(role for role in ROLES if _store(old, role) != _store(new, role))
    queues: set[str] = set()
    for spec in (*change.start, *change.restart):
        if spec.kind == "worker":
            queues.update(resolve(new, group=spec.group, name="-").queues)
    handlers = {name: task.handler for name, task in new.tasks.items() if task.queue in queues}
    return Checks(stores=stores, handlers=handlers)


class Preflight:
    """The checks of one reload, running in the background from construction; see `outcome`."""

    def __init__(self, config: Config, checks: Checks) -> None:
        self._config = config
        self._checks = checks
        self._problems: list[str] = []
        self._imports = _start_imports(config, checks.handlers) if checks.handlers else None
        self._thread = threading.Thread(target=self._run, name="stemrun-preflight", daemon=True)
        self._thread.start()

    def outcome(self) -> list[str] | None:
        """None while the checks run; then every problem found (empty: the reload may go on)."""
        if self._thread.is_alive():
            return None
        return list(self._problems)

    def cancel(self) -> None:
        """Give up (a newer edit, or a stop): end the import check; the store probes time out."""
        if self._imports is not None and self._imports.poll() is None:
            self._imports.kill()

    def _run(self) -> None:
        problems = _store_problems(self._config, self._checks.stores)
        if self._imports is not None:
            problems += _import_problems(self._imports)
        self._problems = problems  # read by the main thread only once this thread has ended


def _store(config: Config, role: str) -> tuple[object, ...]:
    """What opening the store of `role` depends on."""
    return (getattr(config, role), config.namespace, config.tls, config.root_dir)


def _store_problems(config: Config, roles: tuple[str, ...]) -> list[str]:
    if not roles:
        return []
    targets = [Target(role=role, url=getattr(config, role)) for role in roles]
    report = check(config, targets, timeout_s=STORE_TIMEOUT_S)
    return [f"{c.role}: {c.error}" for c in report.checks if not c.ok]


def _start_imports(config: Config, handlers: Mapping[str, str]) -> subprocess.Popen[str]:
    """The import check in a fresh interpreter, started where the children start (same cwd)."""
    request = json.dumps({"root": str(config.root_dir), "handlers": dict(handlers)})
    return subprocess.Popen(
        [sys.executable, "-m", IMPORTS_MODULE, request],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _import_problems(proc: subprocess.Popen[str]) -> list[str]:
    try:
        out, err = proc.communicate(timeout=IMPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return [f"the handlers did not import within {IMPORT_TIMEOUT_S:.0f}s"]
    if proc.returncode in (0, 1):
        try:
            return [str(line) for line in json.loads(out.strip().splitlines()[-1])]
        except (IndexError, ValueError):
            pass  # the interpreter died before its verdict: report how
    tail = " | ".join(err.strip().splitlines()[-3:]) or "no output"
    return [f"the handler import check exited with code {proc.returncode}: {tail}"]
