"""`queue pause | resume`: stop or restart consumption of a queue on every worker."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.cli.common import (
    ConfigOpt,
    JsonOpt,
    LogFormatOpt,
    LogLevelOpt,
    exits,
    load,
    print_json,
)
from stemrun.client import Stem
from stemrun.config.model import Config
from stemrun.errors import UnknownQueue

app = typer.Typer(help="Pause and resume queues (on every worker).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="A queue declared in stem.yaml.")]


def set_paused(config: Config, queue: str, paused: bool) -> None:
    """Record the queue's state in the result backend. Raises UnknownQueue, BackendError."""
    declared = set(config.queues) | {config.default_queue}
    if queue not in declared:
        known = ", ".join(sorted(declared))
        raise UnknownQueue(f"queue {queue!r} is not declared in stem.yaml (declared: {known})")
    with Stem(config) as stem:
        stem.flow.set_paused(queue, paused)


def _report(queue: str, paused: bool, json_out: bool) -> None:
    if json_out:
        print_json({"queue": queue, "paused": paused})
    else:
        state = "paused: workers stop taking from it" if paused else "resumed"
        typer.echo(f"queue {queue} {state}", err=True)


@app.command("pause")
@exits
def pause(
    name: NameArg,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop every worker taking tasks from a queue (persistent; running tasks finish)."""
    set_paused(load(config, log_level, log_format), name, True)
    _report(name, True, json_out)


@app.command("resume")
@exits
def resume(
    name: NameArg,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Let workers take tasks from a paused queue again."""
    set_paused(load(config, log_level, log_format), name, False)
    _report(name, False, json_out)
