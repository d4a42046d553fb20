"""`up`: the supervisor — worker groups and beat as child processes, with hot reload."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.cli.common import exits, load, log_config_warnings, refuse_memory
from stemrun.cli.options import common_options


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("up")(up)


@exits
def up(
    ctx: typer.Context,
    no_reload: Annotated[
        bool, typer.Option("--no-reload", help="Do not watch stem.yaml for changes.")
    ] = False,
    reload_code: Annotated[
        bool,
        typer.Option(
            "--reload-code",
            help="Also restart the workers when a .py file under the config directory changes.",
        ),
    ] = False,
    no_beat: Annotated[
        bool, typer.Option("--no-beat", help="Do not run the beat scheduler.")
    ] = False,
    only: Annotated[
        str | None, typer.Option("--only", help="Comma-separated worker groups to run.")
    ] = None,
) -> None:
    """Run every worker group (and beat) from stem.yaml; reload on change."""
    from stemrun.supervisor import Supervisor, UpOptions

    loaded = load(ctx)
    refuse_memory(loaded, "up")
    log_config_warnings(loaded)
    groups = tuple(name.strip() for name in only.split(",") if name.strip()) if only else None
    given = common_options(ctx)  # handed down to the children
    options = UpOptions(
        reload=not no_reload,
        reload_code=reload_code,
        beat=not no_beat,
        only=groups,
        log_level=given.log_level.value if given.log_level else None,
        log_format=given.log_format.value if given.log_format else None,
    )
    raise typer.Exit(Supervisor(loaded, options).run())
