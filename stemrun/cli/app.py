"""The `stemrun` command line: one Typer app, each command in the module for its topic."""

from __future__ import annotations

import typer

from stemrun.cli import (
    cancel,
    dashboard,
    dlq,
    health,
    keys,
    observe,
    produce,
    project,
    queue,
    run,
    schedule,
    supervise,
    workflow,
)

app = typer.Typer(
    name="stemrun",
    help="Background tasks for Python, declared in one stem.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (project, supervise, run, schedule, produce, workflow, health, keys, cancel, observe):
    module.register(app)
dashboard.register(app)
app.add_typer(dlq.app, name="dlq")
app.add_typer(queue.app, name="queue")


def main() -> None:
    """Console-script entry point."""
    app()
