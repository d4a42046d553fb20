"""`health`: ping every configured store; exit 0 when all answer, 1 when one does not."""

from __future__ import annotations

from typing import Annotated

import typer

from stemrun.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    duration_flag,
    exits,
    load,
    print_json,
)
from stemrun.health import (
    DEFAULT_TIMEOUT_S,
    Check,
    Report,
    check,
    check_tls_files,
    targets,
    warnings,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("health")(health)


@exits
def health(
    ctx: typer.Context,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Check this broker URL instead.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Check this result backend URL instead.")
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", help=f"Deadline per store (default {DEFAULT_TIMEOUT_S:g}s)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check that every configured store answers (TLS diagnostics included)."""
    loaded = load(ctx)
    per_store_s = DEFAULT_TIMEOUT_S
    if timeout is not None:
        per_store_s = duration_flag(timeout, "--timeout", positive=True)
    items = targets(loaded, broker, backend)
    check_tls_files(loaded, items)  # a missing certificate is a config error: exit 2
    for warning in warnings(loaded, items):
        typer.echo(f"warning: {warning}", err=True)
    report = check(loaded, items, per_store_s)
    if json_out:
        print_json(report.to_dict())
    else:
        _print(report)
    if not report.healthy:
        failed = sum(not c.ok for c in report.checks)
        typer.echo(f"unhealthy: {failed} of {len(report.checks)} stores failed", err=True)
    raise typer.Exit(EXIT_OK if report.healthy else EXIT_FAILED)


def _print(report: Report) -> None:
    width = max(len(c.url) for c in report.checks)
    for item in report.checks:
        typer.echo(_line(item, width))


def _line(item: Check, url_width: int) -> str:
    status = "ok" if item.ok else "FAILED"
    line = f"{item.role:<14}  {item.url:<{url_width}}  {status:<6}  {item.latency_ms:>8.1f} ms"
    return line if item.error is None else f"{line}  {item.error}"
