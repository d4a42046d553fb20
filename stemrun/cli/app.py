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
from stemrun.cli.options import RootGroup, root_options

app = typer.Typer(
    name="stemrun",
    cls=RootGroup,  # gives -C/--config, --log-level, --log-format to every command
    callback=root_options,
    help="Background tasks for Python, declared in one stem.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (
    project, supervise, run, schedule, produce, workflow, health, keys, cancel, observe,
    dashboard, dlq, queue,
):  # fmt: skip
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
