"""`enqueue` and `status`: publish a task from the shell and read its outcome."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from stemrun.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    datetime_flag,
    exits,
    load,
    optional_duration_flag,
    print_json,
)
from stemrun.cli.progress import progress_display
from stemrun.client import Stem, TaskStatus
from stemrun.errors import UsageError, WaitTimeout
from stemrun.state import TaskState

WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait and print the final status.")]
TimeoutOpt = Annotated[
    str | None, typer.Option("--timeout", help="Give up waiting after this duration (e.g. 30s).")
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("enqueue")(enqueue)
    app.command("status")(status)


@exits
def enqueue(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task name declared in stem.yaml.")],
    args: Annotated[
        str | None,
        typer.Option(
            "--args", help="Arguments as a JSON object; @FILE reads it from a file, - from stdin."
        ),
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", "-a", help="One argument as key=value.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="One header as key=value.")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-Q", help="Queue override.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="0..9, higher first.")] = None,
    countdown: Annotated[str | None, typer.Option("--countdown", help="Delay, e.g. 10s.")] = None,
    eta: Annotated[str | None, typer.Option("--eta", help="ISO-8601 start time.")] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Cancel if not started in.")
    ] = None,
    task_id: Annotated[str | None, typer.Option("--id", help="Task id (idempotent).")] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
) -> None:
    """Publish a task and print its id (with --wait: its final status as JSON)."""
    with Stem(load(ctx)) as stem:
        new_id = stem.enqueue(
            task,
            args=parse_args(args, arg or []),
            headers=_pairs(header or [], "--header", parse_values=False),
            queue=queue,
            priority=priority,
            countdown=optional_duration_flag(countdown, "--countdown"),
            # A time without an offset is read as UTC, never as the machine's local time.
            eta=datetime_flag(eta, "--eta", UTC),
            expires=optional_duration_flag(expires, "--expires"),
            task_id=task_id,
        )
        if not wait:
            typer.echo(new_id)
            return
        announce_and_wait(stem, new_id, timeout)


@exits
def status(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for a terminal state.")] = False,
    timeout: TimeoutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a task's status; exit 1 for an unknown id (with --wait: unless it succeeded)."""
    with Stem(load(ctx)) as stem:
        current = stem.status(task_id)
        if wait and current.state is not TaskState.UNKNOWN:
            seconds = optional_duration_flag(timeout, "--timeout")
            raise typer.Exit(wait_and_print(stem, task_id, seconds, json_out))
        _show(stem, current, json_out)
        raise typer.Exit(EXIT_FAILED if current.state is TaskState.UNKNOWN else EXIT_OK)


def announce_and_wait(stem: Stem, task_id: str, timeout: str | None) -> NoReturn:
    """After `--wait`: the new id to stderr, then wait and exit with `wait_and_print`'s code."""
    typer.echo(task_id, err=True)
    seconds = optional_duration_flag(timeout, "--timeout")
    raise typer.Exit(wait_and_print(stem, task_id, seconds))


def wait_and_print(stem: Stem, task_id: str, timeout: float | None, as_json: bool = True) -> int:
    """Wait for a terminal state, print the status; the exit code (0 only if it succeeded)."""
    try:
        with progress_display(task_id) as update:
            final = stem.wait(task_id, timeout=timeout, on_update=update)
    except WaitTimeout as exc:
        _show(stem, stem.status(task_id), as_json)
        typer.echo(f"timed out: {exc}", err=True)
        return EXIT_FAILED
    _show(stem, final, as_json)
    return EXIT_OK if final.state is TaskState.SUCCEEDED else EXIT_FAILED


def _show(stem: Stem, record: TaskStatus, as_json: bool) -> None:
    data = _public(record)
    # A group, chord or workflow id: add its members' states and progress counts.
    view = None if record.state is TaskState.UNKNOWN else stem.canvas.describe(record)
    if as_json:
        print_json({**data, **(view or {})})
        return
    for key, value in data.items():
        if value not in (None, {}, [], ""):
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            typer.echo(f"{key:19} {shown}")
    if view is not None:
        _show_members(view)


def _show_members(view: dict[str, Any]) -> None:
    typer.echo(
        f"{'progress':19} {view['completed']}/{view['total']} completed, "
        f"{view['succeeded']} succeeded, {view['failed']} failed"
    )
    extra = [view["callback"]] if "callback" in view else []
    for member in [*view["members"], *extra]:
        typer.echo(f"  {member['id']:40} {member['state']:10} {member['task'] or ''}")


def _public(record: TaskStatus) -> dict[str, Any]:
    if record.state is TaskState.UNKNOWN:
        return {"id": record.id, "state": "unknown"}
    data = record.to_dict()
    data.pop("expires_at", None)
    return data


def parse_args(raw: str | None, pairs: list[str]) -> dict[str, Any]:
    """`--args` (JSON, `@FILE` or `-` for stdin) plus `-a key=value` pairs. Raises UsageError."""
    args: dict[str, Any] = {}
    if raw is not None:
        text, source = _args_text(raw)
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--args {source}is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise UsageError(f"--args must be a JSON object, got {type(parsed).__name__}")
        args.update(parsed)
    args.update(_pairs(pairs, "--arg", parse_values=True))
    return args


def _args_text(raw: str) -> tuple[str | bytes, str]:
    """The JSON `--args` names, and where it came from (for messages): inline, file or stdin.

    A file or stdin is how args too large for a command line get in. Raises UsageError when the
    file cannot be read.
    """
    if raw == "-":
        return sys.stdin.buffer.read(), "- (stdin) "
    if not raw.startswith("@"):
        return raw, ""  # JSON never starts with `@`, so inline JSON is never mistaken for a file
    path = Path(raw[1:])
    try:
        return path.read_bytes(), f"{raw} "
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"--args {raw}: cannot read {str(path)!r}: {reason}") from exc


def _pairs(items: list[str], flag: str, *, parse_values: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects key=value, got {item!r}")
        out[key] = _json_or_text(value) if parse_values else value
    return out


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
