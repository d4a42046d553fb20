"""`queue pause | resume`: stop or restart consumption of a queue on every worker."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.cli.common import JsonOpt, exits, load, print_json
from stemrun.client import Stem
from stemrun.config.model import Config
from stemrun.enqueue import check_queue

app = typer.Typer(help="Pause and resume queues (on every worker).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="A queue declared in stem.yaml.")]


def register(root: typer.Typer) -> None:
    """Add this module's commands to the app."""
    root.add_typer(app, name="queue")


def set_paused(config: Config, queue: str, paused: bool) -> None:
    """Record the queue's state in the result backend. Raises UnknownQueue, BackendError."""
    check_queue(config, queue)
    with Stem(config) as stem:
        stem.flow.set_paused(queue, paused)


@app.command("pause")
@exits
def pause(ctx: typer.Context, name: NameArg, json_out: JsonOpt = False) -> None:
    """Stop every worker taking tasks from a queue (persistent; running tasks finish)."""
    _switch(ctx, name, True, json_out)


@app.command("resume")
@exits
def resume(ctx: typer.Context, name: NameArg, json_out: JsonOpt = False) -> None:
    """Let workers take tasks from a paused queue again."""
    _switch(ctx, name, False, json_out)


def _switch(ctx: typer.Context, queue: str, paused: bool, json_out: bool) -> None:
    set_paused(load(ctx), queue, paused)
    if json_out:
        print_json({"queue": queue, "paused": paused})
    else:
        state = "paused: workers stop taking from it" if paused else "resumed"
        typer.echo(f"queue {queue} {state}", err=True)
