"""`observe queues | workers | metrics | schedules`: live state from the stores, across processes.

`--json` prints the shapes of docs/observability.md; `--watch` refreshes every `--interval` (in
place on a terminal, one block or JSON document per refresh otherwise) until Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer

from stemrun.cli.common import JsonOpt, duration_flag, exits, load, print_json
from stemrun.client import Stem
from stemrun.observe import metric_totals, queue_views, schedule_views, worker_views
from stemrun.stores import schedule_store_for
from stemrun.telemetry import OUTCOMES

app = typer.Typer(
    help="Live state from the stores: queues, workers, metrics, schedules.", no_args_is_help=True
)

WatchOpt = Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")]
IntervalOpt = Annotated[
    str, typer.Option("--interval", help="Refresh period with --watch (e.g. 2s, 500ms).")
]

View = Callable[[Stem], Any]
Text = Callable[[Any], str]


def register(root: typer.Typer) -> None:
    """Add this module's commands to the app."""
    root.add_typer(app, name="observe")
    for name, (view, text, summary) in COMMANDS.items():
        app.command(name, help=summary)(_command(view, text))


def _command(view: View, text: Text) -> Callable[..., None]:
    """One `observe` command: print `view` once, or refresh it with --watch."""

    @exits
    def command(
        ctx: typer.Context,
        json_out: JsonOpt = False,
        watch: WatchOpt = False,
        interval: IntervalOpt = "2s",
    ) -> None:
        stem = Stem(load(ctx))
        _show(stem, view, text, json_out, watch, interval)

    return command


def _workers(stem: Stem) -> list[dict[str, Any]]:
    return worker_views(stem, time.time())


def _schedules(stem: Stem) -> list[dict[str, Any]]:
    store = schedule_store_for(stem.config)
    try:
        return schedule_views(store, time.time())
    finally:
        store.close()


# -- showing ------------------------------------------------------------------------------------


def _show(stem: Stem, view: View, text: Text, json_out: bool, watch: bool, interval: str) -> None:
    """Print once, or refresh every `interval` until Ctrl-C. Raises UsageError, StemrunError."""
    period = duration_flag(interval, "--interval", positive=True)
    with stem:
        if not watch:
            _emit(view(stem), text, json_out)
        elif sys.stdout.isatty() and not json_out:
            _live(stem, view, text, period)
        else:
            _repeat(stem, view, text, json_out, period)


def _emit(data: Any, text: Text, json_out: bool) -> None:
    if json_out:
        print_json(data)
    else:
        typer.echo(text(data))


def _repeat(stem: Stem, view: View, text: Text, json_out: bool, period: float) -> None:
    """Off a terminal: one block (or one JSON document per line) per refresh."""
    try:
        while True:
            _emit(view(stem), text, json_out)
            if not json_out:
                typer.echo("")
            sys.stdout.flush()
            time.sleep(period)
    except KeyboardInterrupt:
        return


def _live(stem: Stem, view: View, text: Text, period: float) -> None:
    """On a terminal: redraw in place with rich."""
    from rich.live import Live
    from rich.text import Text as RichText

    def frame() -> RichText:
        stamp = datetime.now().strftime("%H:%M:%S")
        return RichText(f"{text(view(stem))}\n\nrefreshed {stamp}; Ctrl-C to quit")

    try:
        with Live(frame(), auto_refresh=False) as live:
            while True:
                time.sleep(period)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return


# -- text ---------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    cells = (zip(row, widths, strict=True) for row in lines)
    return "\n".join("  ".join(c.ljust(w) for c, w in row).rstrip() for row in cells)


def _queues_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no queues declared"
    keys = ["pending", "delayed", "in_flight", "dead"]
    headers = ["queue", *keys] + (["paused"] if "paused" in rows[0] else [])
    body = []
    for row in rows:
        cells = [str(row["name"]), *(str(row[key]) for key in keys)]
        if "paused" in row:
            cells.append("yes" if row["paused"] else "")
        body.append(cells)
    return _table(headers, body)


def _ago(moment: float | None) -> str:
    if not moment:
        return "-"
    return f"{max(0.0, time.time() - moment):.1f}s ago"


def _workers_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no workers"
    headers = ["worker", "host", "pid", "queues", "slots", "processed", "failed", "heartbeat"]
    body, running = [], []
    for row in rows:
        beat = _ago(row["last_heartbeat"]) + (" STALE" if row["stale"] else "")
        slots = f"{len(row['active'])}/{row['concurrency']}"
        queues_ = ",".join(row["queues"])
        cells = [
            row["id"],
            row["host"],
            row["pid"],
            queues_,
            slots,
            row["processed"],
            row["failed"],
        ]
        body.append([str(c) for c in [*cells, beat]])
        for task in row["active"]:
            runtime = task.get("runtime_s")
            took = "" if runtime is None else f" for {runtime:.1f}s"
            running.append(f"  {row['id']}: {task['task']} {task['id']} running{took}")
    text = _table(headers, body)
    return text + ("\n\nrunning:\n" + "\n".join(running) if running else "")


def _metrics_text(data: dict[str, Any]) -> str:
    rows = [["(all)", *(str(data["tasks"][k]) for k in OUTCOMES)]]
    for task, counts in data["by_task"].items():
        rows.append([task, *(str(counts[k]) for k in OUTCOMES)])
    return _table(["task", *OUTCOMES], rows)


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


def _schedules_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no schedule entries (run `stemrun schedule apply`)"
    headers = ["schedule", "enabled", "next run", "last run", "runs", "drift", "last error"]
    body = [
        [
            str(row["name"]),
            "yes" if row["enabled"] else "no",
            _when(row["next_run_at"]),
            _when(row["last_run_at"]),
            str(row["total_run_count"]),
            f"{row['drift_s']:.1f}s",
            str(row["last_error"] or ""),
        ]
        for row in rows
    ]
    return _table(headers, body)


#: The `observe` commands: what each reads, how it prints as text, its help.
COMMANDS: dict[str, tuple[View, Text, str]] = {
    "queues": (
        queue_views,
        _queues_text,
        "Pending, delayed, in-flight and dead messages per declared queue.",
    ),
    "workers": (
        _workers,
        _workers_text,
        "Every worker's last heartbeat: its queues, running tasks and counts; stale ones marked.",
    ),
    "metrics": (
        metric_totals,
        _metrics_text,
        "Task outcome totals across every worker since the store was created.",
    ),
    "schedules": (
        _schedules,
        _schedules_text,
        "Schedule entries: next and last fire, drift, last error, enabled.",
    ),
}
