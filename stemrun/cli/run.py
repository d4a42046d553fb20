"""`worker`: run one worker process in the foreground."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from stemrun.cli.common import exits, load, log_config_warnings, refuse_memory
from stemrun.metrics import serve_worker_metrics


class Pool(StrEnum):
    """`--pool` values (a worker group's `pool` in stem.yaml)."""

    PROCESS = "process"
    THREAD = "thread"
    ASYNC = "async"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("worker")(worker)


@exits
def worker(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option("--group", help="Worker group to run.")] = None,
    queues: Annotated[
        str | None, typer.Option("--queues", "-Q", help="Comma-separated queues (overrides).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once.")
    ] = None,
    pool: Annotated[Pool | None, typer.Option("--pool", help="Pool (overrides).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Worker name.")] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once the queues are empty.")] = False,
) -> None:
    """Run one worker process for a worker group."""
    from stemrun.worker import Worker

    loaded = load(ctx)
    refuse_memory(loaded, "worker")
    log_config_warnings(loaded)
    runner = Worker(
        loaded,
        group=group,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
        concurrency=concurrency,
        pool=None if pool is None else pool.value,  # a plain str: enum members hash by name
        name=name,
        burst=burst,
    )
    server = serve_worker_metrics(loaded)  # None under `stemrun up`: its supervisor serves
    try:
        code = runner.run()
    finally:
        if server is not None:
            server.close()
    raise typer.Exit(code)
