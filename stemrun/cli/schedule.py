"""`schedule list | show | apply | dry-run | remove | enable | disable` and `beat`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from stemrun.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    JsonOpt,
    confirm_or_refuse,
    datetime_flag,
    exits,
    fail,
    load,
    print_json,
    refuse_memory,
)
from stemrun.config.model import Config, ScheduleConfig
from stemrun.errors import UsageError
from stemrun.schedules.apply import ScheduleDiff, apply_schedules, set_enabled
from stemrun.schedules.spec import Spec, fires, parse_spec, to_datetime, zone
from stemrun.schedules.store import ScheduleEntry, ScheduleStore
from stemrun.stores import schedule_store_for

app = typer.Typer(
    help="Schedules: list, show, apply, dry-run, remove, enable, disable.", no_args_is_help=True
)

IdArg = Annotated[str, typer.Argument(help="Schedule entry id (its key under `schedules`).")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


def register(root: typer.Typer) -> None:
    """Add this module's commands to the app."""
    root.add_typer(app, name="schedule")
    root.command("beat")(beat)


@contextmanager
def _opened(ctx: typer.Context) -> Iterator[tuple[Config, ScheduleStore]]:
    loaded = load(ctx)
    store = schedule_store_for(loaded)
    try:
        yield loaded, store
    finally:
        store.close()


def _not_stored(entry_id: str) -> NoReturn:
    fail(f"no schedule entry {entry_id!r} in the store", EXIT_FAILED)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


def _when(epoch_s: float | None, tz_name: str) -> str | None:
    return None if epoch_s is None else _iso(to_datetime(epoch_s, zone(tz_name)))


def _public(entry: ScheduleEntry) -> dict[str, Any]:
    data = entry.to_dict()
    data["last_run_at"] = _when(entry.last_run_at, entry.timezone)
    data["next_run_at"] = _when(entry.next_run_at, entry.timezone)
    return data


@app.command("list")
@exits
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the schedule entries in the store with their run state."""
    with _opened(ctx) as (_, store):
        rows = [_public(entry) for entry in store.entries()]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("no schedule entries (declare them under `schedules`, then apply)", err=True)
    for row in rows:
        state = "enabled " if row["enabled"] else "disabled"
        error = f"  last_error={row['last_error']}" if row["last_error"] else ""
        typer.echo(
            f"{row['name']:20} {state} {row['spec']:22} {row['timezone']:16} "
            f"next={row['next_run_at'] or '-'} last={row['last_run_at'] or '-'} "
            f"runs={row['total_run_count']}{error}"
        )


@app.command("show")
@exits
def show(ctx: typer.Context, entry_id: IdArg, json_out: JsonOpt = False) -> None:
    """Show one schedule entry; exit 1 if there is none with that id."""
    with _opened(ctx) as (_, store):
        entry = store.get(entry_id)
    if entry is None:
        _not_stored(entry_id)
    row = _public(entry)
    if json_out:
        print_json(row)
        return
    for key, value in row.items():
        typer.echo(f"{key:16} {'-' if value is None else value}")


@app.command("apply")
@exits
def apply(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", help="Apply the schedules of this stem.yaml instead.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print the diff.")] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove stored entries no longer declared.")
    ] = False,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Make the store match the declared schedules; prints the diff first."""
    with _opened(ctx) as (loaded, store):
        declared = _declared(file)
        diff = apply_schedules(loaded, store, schedules=declared, prune=prune, dry_run=True)
        if dry_run or not diff.has_changes:
            _print_diff(diff, json_out)
            return
        if not json_out:
            _print_diff(diff, json_out)
        if not confirm_or_refuse("Apply these schedule changes?", yes):
            raise typer.Exit(EXIT_FAILED)
        done = apply_schedules(loaded, store, schedules=declared, prune=prune)
    if json_out:
        print_json(done.to_dict())
    typer.echo(_summary(done), err=True)


def _declared(file: Path | None) -> dict[str, ScheduleConfig] | None:
    if file is None:
        return None
    from stemrun.config import load_config

    return load_config(file).schedules


def _print_diff(diff: ScheduleDiff, as_json: bool) -> None:
    if as_json:
        print_json(diff.to_dict())
        return
    for change in diff.added:
        assert change.after is not None
        typer.echo(f"+ {change.name}: {_describe(change.after)}")
    for change in diff.changed:
        assert change.before is not None and change.after is not None
        fields = ", ".join(
            f"{f}: {getattr(change.before, f)!r} -> {getattr(change.after, f)!r}"
            for f in change.fields
        )
        typer.echo(f"~ {change.name}: {fields}; next {_next(change.after)}")
    for change in diff.removed:
        typer.echo(f"- {change.name}: {change.before.spec if change.before else ''}")
    typer.echo(_summary(diff), err=True)


def _describe(entry: ScheduleEntry) -> str:
    queue = f" queue={entry.queue}" if entry.queue else ""
    return f"{entry.task} {entry.spec} ({entry.timezone}){queue}; next {_next(entry)}"


def _next(entry: ScheduleEntry) -> str:
    if not entry.enabled:
        return "- (disabled)"
    return _when(entry.next_run_at, entry.timezone) or "- (never)"


def _summary(diff: ScheduleDiff) -> str:
    if not diff.has_changes:
        text = "no changes"
    else:
        verb = "" if diff.applied else "would be "
        text = (
            f"{len(diff.added)} {verb}added, {len(diff.changed)} {verb}changed, "
            f"{len(diff.removed)} {verb}removed"
        )
    if diff.undeclared:
        names = ", ".join(diff.undeclared)
        text += f"; {len(diff.undeclared)} not declared, kept (use --prune to remove): {names}"
    return text


@app.command("dry-run")
@exits
def dry_run(
    ctx: typer.Context,
    entry_id: Annotated[
        str | None, typer.Option("--id", help="A stored or declared entry.")
    ] = None,
    spec: Annotated[
        str | None, typer.Option("--spec", help="A spec, e.g. 'cron:0 8 * * *'.")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="Zone for --spec (default UTC).")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="How many fires.")] = 10,
    start: Annotated[
        str | None,
        typer.Option("--from", help="ISO-8601 start (default now; naive: the entry's zone)."),
    ] = None,
) -> None:
    """Print the next fire times, one ISO-8601 datetime per line, in the entry's time zone."""
    if spec is not None and entry_id is None:
        tz = _zone(timezone or "UTC")
        parsed = _spec(spec)
        moments = fires(parsed, datetime_flag(start, "--from", tz) or datetime.now(UTC), tz, count)
    elif entry_id is not None and spec is None:
        moments = _entry_fires(_entry(ctx, entry_id), start, count)
    else:
        fail("give exactly one of --id ID or --spec SPEC", EXIT_USAGE)
    for moment in moments:
        typer.echo(_iso(moment))


def _entry(ctx: typer.Context, entry_id: str) -> ScheduleEntry:
    """The stored entry, else the one stem.yaml declares (not applied yet); exit 1 if neither."""
    with _opened(ctx) as (loaded, store):
        entry = store.get(entry_id)
    if entry is not None:
        return entry
    declared = loaded.schedules.get(entry_id)
    if declared is None:
        fail(f"no schedule entry {entry_id!r} in the store or stem.yaml", EXIT_FAILED)
    return ScheduleEntry.declared(declared)


def _entry_fires(entry: ScheduleEntry, start: str | None, count: int) -> list[datetime]:
    """An armed entry continues from its next run (an overdue fire is listed first), or from
    `start` on its grid; a disabled or unapplied one fires as if applied at `start`."""
    tz = _zone(entry.timezone)
    next_run = None
    if entry.enabled and entry.next_run_at is not None:
        next_run = to_datetime(entry.next_run_at, tz)
    last_run = None if entry.last_run_at is None else to_datetime(entry.last_run_at, tz)
    begin = datetime_flag(start, "--from", tz) or next_run or datetime.now(UTC)
    return fires(_spec(entry.spec), begin, tz, count, anchor=next_run, last_run=last_run)


def _zone(name: str) -> tzinfo:
    try:
        return zone(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _spec(text: str) -> Spec:
    try:
        return parse_spec(text)
    except ValueError as exc:
        raise UsageError(f"invalid spec: {exc}") from exc


@app.command("remove")
@exits
def remove(ctx: typer.Context, entry_id: IdArg, yes: YesOpt = False) -> None:
    """Delete one entry from the store; exit 1 if there is none with that id."""
    with _opened(ctx) as (loaded, store):
        if store.get(entry_id) is None:
            _not_stored(entry_id)
        if not confirm_or_refuse(f"Remove schedule entry {entry_id!r}?", yes):
            raise typer.Exit(EXIT_FAILED)
        if not store.remove(entry_id):
            _not_stored(entry_id)
    typer.echo(f"removed {entry_id}", err=True)
    if entry_id in loaded.schedules:
        typer.echo("it is declared in stem.yaml: the next apply adds it back", err=True)


@app.command("enable")
@exits
def enable(ctx: typer.Context, entry_id: IdArg) -> None:
    """Enable one entry (it continues from its last run); exit 1 if unknown."""
    _toggle(ctx, entry_id, True)


@app.command("disable")
@exits
def disable(ctx: typer.Context, entry_id: IdArg) -> None:
    """Disable one entry until enabled again (or re-applied from stem.yaml); exit 1 if unknown."""
    _toggle(ctx, entry_id, False)


def _toggle(ctx: typer.Context, entry_id: str, enabled: bool) -> None:
    with _opened(ctx) as (_, store):
        entry = set_enabled(store, entry_id, enabled)
    if entry is None:
        _not_stored(entry_id)
    state = "enabled" if enabled else "disabled"
    typer.echo(f"{entry_id} {state}; next {_next(entry)}", err=True)


@exits
def beat(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Beat name (lease owner).")
    ] = None,
) -> None:
    """Run one beat scheduler: applies the declared schedules, then fires due entries."""
    from stemrun.beat import Beat

    loaded = load(ctx)
    refuse_memory(loaded, "beat", schedules=True)
    raise typer.Exit(Beat(loaded, name=name).run())
