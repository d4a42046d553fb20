"""`enqueue` and `status`: publish a task from the shell and read its outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from stemrun.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    LogFormatOpt,
    LogLevelOpt,
    exits,
    load,
    print_json,
)
from stemrun.cli.progress import progress_display
from stemrun.client import Stem, TaskStatus
from stemrun.errors import UsageError, WaitTimeout
from stemrun.state import TaskState

TimeoutOpt = Annotated[
    str | None, typer.Option("--timeout", help="Give up waiting after this duration (e.g. 30s).")
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("enqueue")(enqueue)
    app.command("status")(status)


@exits
def enqueue(
    task: Annotated[str, typer.Argument(help="Task name declared in stem.yaml.")],
    args: Annotated[str | None, typer.Option("--args", help="Arguments as a JSON object.")] = None,
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
    wait: Annotated[bool, typer.Option("--wait", help="Wait and print the final status.")] = False,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Publish a task and print its id (with --wait: its final status as JSON)."""
    loaded = load(config, log_level, log_format)
    with Stem(loaded) as stem:
        new_id = stem.enqueue(
            task,
            args=parse_args(args, arg or []),
            headers=_pairs(header or [], "--header", parse_values=False),
            queue=queue,
            priority=priority,
            countdown=parse_duration_flag(countdown, "--countdown"),
            eta=_iso(eta),
            expires=parse_duration_flag(expires, "--expires"),
            task_id=task_id,
        )
        if not wait:
            typer.echo(new_id)
            return
        typer.echo(new_id, err=True)
        raise typer.Exit(wait_and_print(stem, new_id, parse_duration_flag(timeout, "--timeout")))


@exits
def status(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for a terminal state.")] = False,
    timeout: TimeoutOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a task's status; exit 1 for an unknown id (with --wait: unless it succeeded)."""
    loaded = load(config, log_level, log_format)
    with Stem(loaded) as stem:
        current = stem.status(task_id)
        if wait and current.state is not TaskState.UNKNOWN:
            raise typer.Exit(
                wait_and_print(stem, task_id, parse_duration_flag(timeout, "--timeout"), json_out)
            )
        _show(stem, current, json_out)
        raise typer.Exit(EXIT_FAILED if current.state is TaskState.UNKNOWN else EXIT_OK)


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
    """`--args` JSON plus `-a key=value` pairs. Raises UsageError."""
    args: dict[str, Any] = {}
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"--args is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise UsageError(f"--args must be a JSON object, got {type(parsed).__name__}")
        args.update(parsed)
    args.update(_pairs(pairs, "--arg", parse_values=True))
    return args


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


def parse_duration_flag(value: str | None, flag: str) -> float | None:
    """A duration flag's value in seconds (None when absent). Raises UsageError."""
    from stemrun.config import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


def _iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"--eta is not an ISO-8601 datetime: {value!r}") from exc
    # A time without an offset is read as UTC, never as the machine's local time.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
