"""`cancel ID`: cancel a queued task for good, or ask a running one to stop at its next ctx call."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    exits,
    fail,
    load,
    print_json,
)
from stemrun.client import Stem
from stemrun.state import TERMINAL, TaskState

RUNNING_NOTE = "cancel requested; it stops at its next ctx.progress() or ctx.heartbeat()"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("cancel")(cancel)


@exits
def cancel(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="Id of the task to cancel.")],
    json_out: JsonOpt = False,
) -> None:
    """Cancel a queued task (persistently), or a running one cooperatively."""
    loaded = load(ctx)
    with Stem(loaded) as stem:
        before = stem.backend.get(task_id)
        if before is None:
            fail(f"unknown task id {task_id!r}", EXIT_FAILED)
        if before.state in TERMINAL:
            fail(f"task {task_id} already {before.state}; nothing to cancel", EXIT_FAILED)
        task = loaded.tasks.get(before.task)
        ttl = task.result_ttl_s if task is not None else loaded.result_ttl_s
        after = stem.backend.cancel(task_id, stem.clock.now(), result_ttl_s=ttl)
    if after is None:  # its record expired in between
        fail(f"unknown task id {task_id!r}", EXIT_FAILED)
    if json_out:
        print_json(after.to_dict())
    elif after.state == TaskState.RUNNING:
        typer.echo(f"{task_id}: running; {RUNNING_NOTE}")
    else:
        typer.echo(f"{task_id}: {after.state}")
    if after.state not in (TaskState.CANCELLED, TaskState.RUNNING):
        fail(f"task {task_id} finished as {after.state} before it could be cancelled", EXIT_FAILED)
