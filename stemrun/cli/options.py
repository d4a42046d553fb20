"""The options every command takes (`-C/--config`, `--log-level`, `--log-format`), declared once.

They are accepted before the command name (`stemrun -C x.yaml worker`) and after it (`stemrun
worker -C x.yaml`): `RootGroup` hands the root's option objects to every command when the app is
built. Their values live on the root context; a value given after the command name wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

_META_KEY = "stemrun.common_options"


class LogLevel(StrEnum):
    """`--log-level` values (the `logging.level` of stem.yaml)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """`--log-format` values (the `logging.format` of stem.yaml)."""

    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommonOptions:
    """The common options of one command line; None where not given."""

    config: Path | None = None
    log_level: LogLevel | None = None
    log_format: LogFormat | None = None


def common_options(ctx: typer.Context) -> CommonOptions:
    """The common options given on this command line, before or after the command name."""
    found = ctx.find_root().meta.get(_META_KEY)
    return found if isinstance(found, CommonOptions) else CommonOptions()


def _remember(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> None:
    # The root's callback runs before the command's, so a value after the command name wins.
    if value is not None and param.name is not None:
        given = dataclasses.replace(common_options(ctx), **{param.name: value})
        ctx.find_root().meta[_META_KEY] = given


def _common_option(*declarations: str, help: str) -> Any:
    # Not passed to the command functions (expose_value=False): they read `common_options(ctx)`.
    return typer.Option(*declarations, help=help, callback=_remember, expose_value=False)


ConfigOpt = Annotated[
    Path | None,
    _common_option(
        "--config", "-C", help="Path to stem.yaml (default: $STEM_CONFIG, else ./stem.yaml)."
    ),
]
LogLevelOpt = Annotated[
    LogLevel | None,
    _common_option("--log-level", help="Overrides logging.level of stem.yaml."),
]
LogFormatOpt = Annotated[
    LogFormat | None,
    _common_option("--log-format", help="Overrides logging.format of stem.yaml."),
]


def root_options(
    config: ConfigOpt = None, log_level: LogLevelOpt = None, log_format: LogFormatOpt = None
) -> None:
    """The root callback: its signature puts the common options on `stemrun` itself."""


class RootGroup(TyperGroup):
    """The `stemrun` group: gives its own (common) options to every command below it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _share(self, self.params)


def _share(group: TyperGroup, params: list[Any]) -> None:
    for command in group.commands.values():
        if isinstance(command, TyperGroup):
            _share(command, params)
        else:
            command.params.extend(params)
