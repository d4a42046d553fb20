"""`init`, `validate` and `tasks`: writing and checking stem.yaml."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from stemrun.cli.common import (
    EXIT_USAGE,
    JsonOpt,
    exits,
    fail,
    load,
    print_json,
)
from stemrun.config.model import Config, TaskConfig
from stemrun.errors import HandlerImportError
from stemrun.registry import ensure_import_path, load_handler
from stemrun.signing import signing_mode

STARTER_TASKS = '''"""Task handlers for the starter stem.yaml written by `stemrun init`."""

import random

from stemrun import TaskContext


def hello(name: str = "world") -> dict:
    return {"greeting": f"Hello, {name}!"}


def add(x: float, y: float) -> float:
    return x + y


def flaky(ctx: TaskContext, failure_rate: float = 0.5) -> str:
    if random.random() < failure_rate:
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return "ok"
'''


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("init")(init)
    app.command("validate")(validate)
    app.command("tasks")(tasks)


@exits
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.")] = Path("stem.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter stem.yaml (and a tasks.py beside it when there is none)."""
    if path.exists() and not force:
        fail(f"{path} already exists; use --force to overwrite it", EXIT_USAGE)
    starter = resources.files("stemrun.config").joinpath("starter.yaml").read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(starter)
    tasks_module = path.parent / "tasks.py"
    if not tasks_module.exists():
        tasks_module.write_text(STARTER_TASKS)
    typer.echo(f"wrote {path}" + (f" and {tasks_module}" if tasks_module.exists() else ""))
    typer.echo("next: `stemrun worker` in one terminal, `stemrun enqueue hello --wait` in another")


@exits
def validate(
    ctx: typer.Context,
    imports: Annotated[
        bool, typer.Option("--imports", help="Also import every task handler.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate stem.yaml: schema, environment references, cross references, handler imports."""
    loaded = load(ctx, check_files=True)
    if imports:
        _check_imports(loaded)
    mode, cannot_sign = signing_mode(loaded.signing)  # an incomplete producer config exits 2
    if cannot_sign is not None:
        typer.echo(f"warning: {loaded.path}: verify-only signing config: {cannot_sign}", err=True)
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    queues = sorted(set(loaded.queues) | {loaded.default_queue})
    summary = {
        "file": str(loaded.path),
        "valid": True,
        "queues": queues,
        "tasks": len(loaded.tasks),
        "workers": len(loaded.workers),
        "schedules": len(loaded.schedules),
        "workflows": len(loaded.workflows),
        "signing": loaded.signing.algorithm if loaded.signing else None,
        "signing_mode": mode,
        "warnings": list(loaded.warnings),
    }
    if json_out:
        print_json(summary)
        return
    typer.echo(
        f"{loaded.path}: valid: {len(queues)} queues, {summary['tasks']} tasks, "
        f"{summary['workers']} worker groups, {summary['schedules']} schedules, "
        f"{summary['workflows']} workflows" + (" (handlers import)" if imports else "")
    )


def _check_imports(config: Config) -> None:
    ensure_import_path(config.root_dir)
    problems = []
    for task in config.tasks.values():
        try:
            load_handler(task.handler)
        except HandlerImportError as exc:
            problems.append(f"{config.path}: tasks.{task.name}.handler: {exc}")
    if problems:
        raise HandlerImportError("\n".join(problems))


@exits
def tasks(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the declared tasks with their options."""
    loaded = load(ctx)
    rows = [_task_row(task) for task in loaded.tasks.values()]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        options = ", ".join(
            f"{key}={value}" for key, value in row.items() if key not in ("name", "handler")
        )
        typer.echo(f"{row['name']:24} {row['handler']:32} {options}")


def _task_row(task: TaskConfig) -> dict[str, object]:
    return {
        "name": task.name,
        "handler": task.handler,
        "queue": task.queue,
        "max_retries": task.max_retries,
        "priority": task.priority,
        "soft_time_limit_s": task.soft_time_limit_s,
        "hard_time_limit_s": task.hard_time_limit_s,
        "visibility_timeout_s": task.visibility_timeout_s,
        "expires_s": task.expires_s,
        "rate_limit": task.rate_limit,
    }
