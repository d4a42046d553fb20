"""A live progress bar for `--wait` on a terminal, fed by the task's `ctx.progress` calls."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from stemrun.client import TaskStatus

Update = Callable[[TaskStatus], None]


@contextmanager
def progress_display(task_id: str) -> Iterator[Update | None]:
    """Yield an update callback drawing a bar on stderr, or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stage]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        row = bar.add_task(task_id[:12], total=1.0, stage="queued")

        def update(status: TaskStatus) -> None:
            stage = status.progress_meta.get("stage", status.state)
            bar.update(row, completed=status.progress or 0.0, stage=str(stage))

        yield update
