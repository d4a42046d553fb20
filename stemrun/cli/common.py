"""What every command shares: the common options, config loading and error -> exit code mapping."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

from stemrun.config.model import Config
from stemrun.errors import ConfigError, HandlerImportError, StemrunError, UsageError
from stemrun.logs import setup_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-C", help="Path to stem.yaml (default: $STEM_CONFIG, else ./stem.yaml)."
    ),
]
LogLevelOpt = Annotated[
    str | None, typer.Option("--log-level", help="debug | info | warning | error.")
]
LogFormatOpt = Annotated[str | None, typer.Option("--log-format", help="text | json.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

P = ParamSpec("P")
R = TypeVar("R")


def load(config: Path | None, log_level: str | None, log_format: str | None) -> Config:
    """Load stem.yaml and set up logging (CLI flags win over the file). Raises ConfigError."""
    from stemrun.config import load_config

    for value, allowed in (
        (log_level, ("debug", "info", "warning", "error")),
        (log_format, ("text", "json")),
    ):
        if value is not None and value not in allowed:
            raise UsageError(f"{value!r} is not one of: {', '.join(allowed)}")
    loaded = load_config(config)
    setup_logging(log_level or loaded.logging.level, log_format or loaded.logging.format)
    return loaded


def exits(fn: Callable[P, R]) -> Callable[P, R]:
    """Map stemrun errors to the SPEC exit codes: 2 for usage/config, 1 for failures."""

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
