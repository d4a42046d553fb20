"""`dlq list | show | replay | purge`: inspect and recover dead letters."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.brokers.base import DeadLetter
from stemrun.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    confirm_or_refuse,
    duration_flag,
    exits,
    fail,
    load,
    print_json,
)
from stemrun.client import Stem
from stemrun.errors import UsageError

app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-Q", help="Only this queue.")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="At most this many.")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


def register(root: typer.Typer) -> None:
    """Add this module's commands to the app."""
    root.add_typer(app, name="dlq")


@app.command("list")
@exits
def list_(
    ctx: typer.Context,
    queue: QueueOpt = None,
    limit: LimitOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """List dead letters, oldest first."""
    with Stem(load(ctx)) as stem:
        rows = [entry.summary() for entry in stem.dead_letters(queue, limit)]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("no dead letters", err=True)
    for row in rows:
        error = row["error"] or {}
        typer.echo(
            f"{row['id']}  {row['task'] or '?':20} {row['queue']:12} {row['reason']:24} "
            f"attempt={row['attempt']} {error.get('type', '')}: {error.get('message', '')}"
        )


@app.command("show")
@exits
def show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="Task id of the dead letter.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one dead letter with its error and traceback."""
    with Stem(load(ctx)) as stem:
        entry = stem.dead_letter_admin.dead_letter_get(task_id)
    if entry is None:
        fail(f"no dead letter with id {task_id!r}", EXIT_FAILED)
    row = entry.summary()
    if json_out:
        print_json(row)
        return
    error = row.pop("error") or {}
    for key, value in row.items():
        typer.echo(f"{key:9} {value}")
    typer.echo(f"error     {error.get('type', '')}: {error.get('message', '')}")
    if error.get("traceback"):
        typer.echo(error["traceback"])


@app.command("replay")
@exits
def replay(
    ctx: typer.Context,
    queue: QueueOpt = None,
    task_ids: Annotated[
        list[str] | None, typer.Option("--id", help="Replay this id (repeatable).")
    ] = None,
    limit: LimitOpt = 100,
    delay: Annotated[str | None, typer.Option("--delay", help="Delay before they run.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would run.")] = False,
    yes: YesOpt = False,
) -> None:
    """Re-enqueue dead letters under their ids with a fresh retry budget."""
    with Stem(load(ctx)) as stem:
        entries = _select(stem, queue, task_ids or [], limit)
        for entry in entries:
            typer.echo(f"{'would replay' if dry_run else 'replay'} {entry.id} ({entry.task})")
        if dry_run or not entries:
            if not entries:
                typer.echo("nothing to replay", err=True)
            return
        if not confirm_or_refuse(f"Replay {len(entries)} dead letter(s)?", yes):
            raise typer.Exit(EXIT_FAILED)
        delay_s = duration_flag(delay, "--delay") if delay else 0.0
        done = stem.replay(entries, delay=delay_s)
        typer.echo(f"replayed {len(done)} task(s)", err=True)


def _select(stem: Stem, queue: str | None, ids: list[str], limit: int) -> list[DeadLetter]:
    if not ids:
        return stem.dead_letters(queue, limit)
    entries = []
    for task_id in ids:
        entry = stem.dead_letter_admin.dead_letter_get(task_id)
        if entry is None:
            fail(f"no dead letter with id {task_id!r}", EXIT_FAILED)
        entries.append(entry)
    return entries


@app.command("purge")
@exits
def purge(
    ctx: typer.Context,
    queue: QueueOpt = None,
    task_ids: Annotated[
        list[str] | None, typer.Option("--id", help="Purge just this id (repeatable).")
    ] = None,
    yes: YesOpt = False,
) -> None:
    """Delete dead letters (of one queue, all, or just the given ids)."""
    if queue and task_ids:
        raise UsageError("give --queue or --id, not both")
    with Stem(load(ctx)) as stem:
        if task_ids:
            _purge_ids(stem, task_ids, yes)
            return
        scope = f"queue {queue!r}" if queue else "every queue"
        if not confirm_or_refuse(f"Purge the dead letters of {scope}?", yes):
            raise typer.Exit(EXIT_FAILED)
        typer.echo(f"purged {stem.purge_dead_letters(queue)} dead letter(s)", err=True)


def _purge_ids(stem: Stem, task_ids: list[str], yes: bool) -> None:
    """Delete the dead letters with these ids; exit 1 when none of them existed."""
    if not confirm_or_refuse(f"Purge {len(task_ids)} dead letter(s) by id?", yes):
        raise typer.Exit(EXIT_FAILED)
    count = stem.purge_dead_letters(task_ids=task_ids)
    if count == 0:
        fail(f"no dead letter with id {' or '.join(map(repr, task_ids))}", EXIT_FAILED)
    typer.echo(f"purged {count} dead letter(s)", err=True)
