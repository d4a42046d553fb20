"""What every command shares: loading the config, error -> exit code mapping, output helpers."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

from stemrun.cli.options import common_options
from stemrun.config.model import Config
from stemrun.errors import ConfigError, HandlerImportError, StemrunError, UsageError
from stemrun.logs import setup_logging
from stemrun.stores import process_local
from stemrun.supervision import SUPERVISOR_PID_ENV
from stemrun.url import mask_url

config_log = logging.getLogger("stemrun.config")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

P = ParamSpec("P")
R = TypeVar("R")


def load(ctx: typer.Context, *, check_files: bool = False) -> Config:
    """Load the stem.yaml the common options name and set up logging (flags win over the file).

    `check_files`: the tls section's files must exist and be usable. Raises ConfigError.
    """
    from stemrun.config import load_config

    given = common_options(ctx)
    loaded = load_config(given.config, check_files=check_files)
    setup_logging(
        given.log_level or loaded.logging.level, given.log_format or loaded.logging.format
    )
    return loaded


def log_config_warnings(config: Config) -> None:
    """Log what weakens security (docs/security.md, "Warnings") as a process starts.

    Not in the children of `stemrun up`: the supervisor logs them, naming stem.yaml rather than
    the frozen copy a child loads, at start and for every reload it accepts.
    """
    if os.environ.get(SUPERVISOR_PID_ENV):
        return
    for warning in config.warnings:
        config_log.warning("%s", warning)


def refuse_memory(config: Config, command: str, *, schedules: bool = False) -> None:
    """Exit 2 when a store `command` shares with other processes is memory:// (one process only).

    The broker and result backend, plus the schedule store with `schedules`.
    """
    stores = {"broker": config.broker, "result_backend": config.result_backend}
    if schedules:
        stores["schedule_store"] = config.schedule_store
    for role, url in stores.items():
        if process_local(url):
            fail(
                f"{role} {mask_url(url)}: `stemrun {command}` cannot use memory:// (it only lives "
                "inside one process); use sqlite:///.stem/stem.db or a Redis/Postgres URL",
                EXIT_USAGE,
            )


def exits(fn: Callable[P, R]) -> Callable[P, R]:
    """Map stemrun errors to the exit codes: 2 for usage/config, 1 for failures."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, UsageError, HandlerImportError) as exc:
            fail(str(exc), EXIT_USAGE)
        except StemrunError as exc:
            fail(f"error: {exc}", EXIT_FAILED)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def fail(message: str, code: int) -> NoReturn:
    """Print a diagnostic to stderr and exit with `code`."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def duration_flag(value: str, flag: str, *, positive: bool = False) -> float:
    """A duration flag's value in seconds (`30s`, `500ms`). Raises UsageError."""
    from stemrun.config import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc
    if positive and seconds <= 0:
        raise UsageError(f"{flag} must be positive, got {value!r}")
    return seconds


def optional_duration_flag(value: str | None, flag: str) -> float | None:
    """`duration_flag`, or None when the flag is absent. Raises UsageError."""
    return None if value is None else duration_flag(value, flag)


def datetime_flag(value: str | None, flag: str, tz: tzinfo) -> datetime | None:
    """An ISO-8601 flag's datetime (None when absent); a naive one is read in `tz`.

    Raises UsageError.
    """
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"{flag} is not an ISO-8601 datetime: {value!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def print_json(data: Any) -> None:
    """Data to stdout as JSON (one document)."""
    sys.stdout.write(json.dumps(data, indent=None, default=str) + "\n")


def is_terminal() -> bool:
    """Whether stdin is an interactive terminal (confirmations are possible)."""
    return sys.stdin.isatty()


def confirm_or_refuse(question: str, yes: bool) -> bool:
    """True to go ahead; asks on a terminal, refuses off one without --yes (exit 2)."""
    if yes:
        return True
    if not is_terminal():
        fail(f"{question} Refusing without --yes when stdin is not a terminal.", EXIT_USAGE)
    return typer.confirm(question, default=False)
