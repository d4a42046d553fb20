"""`worker`: run one worker process in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.cli.common import EXIT_USAGE, ConfigOpt, LogFormatOpt, LogLevelOpt, exits, fail, load
from stemrun.config.model import Config
from stemrun.metrics import serve_worker_metrics
from stemrun.stores import process_local
from stemrun.url import mask_url


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("worker")(worker)


def refuse_memory(config: Config, command: str) -> None:
    """memory:// lives in one process; a separate worker process could never see its tasks."""
    for role, url in (("broker", config.broker), ("result_backend", config.result_backend)):
        if process_local(url):
            fail(
                f"{role} {mask_url(url)}: `stemrun {command}` cannot use memory:// (it only lives "
                "inside one process); use sqlite:///.stem/stem.db or a Redis/Postgres URL",
                EXIT_USAGE,
            )


@exits
def worker(
    group: Annotated[str | None, typer.Option("--group", help="Worker group to run.")] = None,
    queues: Annotated[
        str | None, typer.Option("--queues", "-Q", help="Comma-separated queues (overrides).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once.")
    ] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="process | thread | async.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Worker name.")] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once the queues are empty.")] = False,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run one worker process for a worker group."""
    from stemrun.worker import Worker

    loaded = load(config, log_level, log_format)
    refuse_memory(loaded, "worker")
    if pool is not None and pool not in ("process", "thread", "async"):
        fail(f"--pool must be one of: process, thread, async (got {pool!r})", EXIT_USAGE)
    runner = Worker(
        loaded,
        group=group,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
        concurrency=concurrency,
        pool=pool,  # type: ignore[arg-type]  # checked above
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
