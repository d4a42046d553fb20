"""`workflow list | run`: the canvas workflows declared in stem.yaml."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stemrun.cli.common import JsonOpt, exits, load, print_json
from stemrun.cli.produce import TimeoutOpt, WaitOpt, announce_and_wait, parse_args
from stemrun.client import Stem
from stemrun.config.model import WorkflowConfig

app = typer.Typer(help="Canvas workflows declared in stem.yaml: list, run.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add this module's commands to the app."""
    root.add_typer(app, name="workflow")


def _row(workflow: WorkflowConfig) -> dict[str, Any]:
    steps = [{"task": s.task, "args": s.args} for s in workflow.steps]
    row: dict[str, Any] = {"name": workflow.name, "kind": workflow.kind, "steps": steps}
    if workflow.callback is not None:
        row["callback"] = {"task": workflow.callback.task, "args": workflow.callback.args}
    return row


@app.command("list")
@exits
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the workflows with their kind and steps."""
    loaded = load(ctx)
    rows = [_row(w) for _, w in sorted(loaded.workflows.items())]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("no workflows declared in stem.yaml", err=True)
    for row in rows:
        arrow = " -> " if row["kind"] == "chain" else ", "
        steps = arrow.join(step["task"] for step in row["steps"])
        if "callback" in row:
            steps = f"[{steps}] => {row['callback']['task']}"
        typer.echo(f"{row['name']:24} {row['kind']:6} {steps}")


@app.command("run")
@exits
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Workflow name declared in stem.yaml.")],
    args: Annotated[
        str | None,
        typer.Option(
            "--args",
            help="JSON object merged into the first chain step or every member; @FILE reads it "
            "from a file, - from stdin.",
        ),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a workflow and print its id (with --wait: its final status as JSON)."""
    loaded = load(ctx)
    parsed = parse_args(args, [])
    with Stem(loaded) as stem:
        workflow_id = stem.run_workflow(name, parsed)
        if wait:
            announce_and_wait(stem, workflow_id, timeout)
        if json_out:
            print_json({"id": workflow_id, "workflow": name})
        else:
            typer.echo(workflow_id)
