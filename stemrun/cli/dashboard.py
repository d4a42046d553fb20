"""`dashboard`: serve the web console (needs the `dashboard` extra)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from stemrun.cli.common import EXIT_USAGE, exits, fail, load
from stemrun.config.model import Config
from stemrun.errors import MissingDependency

#: The environment variable holding the optional access token (bearer or basic-auth password).
TOKEN_ENV = "STEM_DASHBOARD_TOKEN"


def register(root: typer.Typer) -> None:
    """Add this module's command to the app."""
    root.command("dashboard")(dashboard)


@exits
def dashboard(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (loopback unless you say so).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Hide every action and refuse its POSTs (403).")
    ] = False,
) -> None:
    """Serve the web dashboard: queues, workers, tasks, dead letters, schedules."""
    from stemrun import dashboard as web

    try:
        web.require()
    except MissingDependency as exc:
        # A missing extra is an install problem, not a failed operation: usage exit code.
        fail(f"error: {exc}", EXIT_USAGE)
    loaded = load(ctx)
    serve(loaded, host, port, read_only, os.environ.get(TOKEN_ENV) or None)


def serve(config: Config, host: str, port: int, read_only: bool, token: str | None) -> None:
    """Run the app with uvicorn until Ctrl-C; closes the stores after."""
    import uvicorn

    from stemrun.client import Stem
    from stemrun.dashboard.app import create_app
    from stemrun.dashboard.security import Guard
    from stemrun.dashboard.views import Console

    console = Console(Stem(config))
    app = create_app(console, Guard(token), read_only=read_only)
    mode = " (read-only)" if read_only else ""
    auth = ", token required" if token else ""
    typer.echo(f"stemrun dashboard on http://{host}:{port}/{mode}{auth}", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        console.close()
