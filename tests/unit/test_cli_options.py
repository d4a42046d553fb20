"""The common options (-C/--config, --log-level, --log-format) and the enum options of the CLI."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from stemrun.cli.app import app

STEM_YAML = "version: 1\ntasks:\n  {name}: {{handler: 'tasks:run'}}\n"


@pytest.fixture(autouse=True)
def stemrun_logger() -> Iterator[logging.Logger]:
    """Commands set up the `stemrun` logger; put it back as it was after each test."""
    logger = logging.getLogger("stemrun")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def project(tmp_path: Path, name: str) -> Path:
    """A stem.yaml declaring one task named `name` (so the output shows which file was read)."""
    path = tmp_path / name / "stem.yaml"
    path.parent.mkdir()
    path.write_text(STEM_YAML.format(name=name))
    return path


def task_names(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    return [row["name"] for row in json.loads(done.stdout)]


def commands(group: TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


def test_common_options_are_accepted_after_and_before_the_command(tmp_path: Path) -> None:
    first = str(project(tmp_path, "first"))
    assert task_names(["tasks", "--json", "-C", first]) == ["first"]
    assert task_names(["tasks", "--config", first, "--json"]) == ["first"]
    assert task_names(["-C", first, "tasks", "--json"]) == ["first"]
    assert task_names(["--config", first, "workflow", "list", "--json"]) == []


def test_after_the_command_wins_and_config_beats_stem_config(tmp_path: Path) -> None:
    first, second = str(project(tmp_path, "first")), str(project(tmp_path, "second"))
    assert task_names(["-C", first, "tasks", "--json", "-C", second]) == ["second"]
    assert task_names(["tasks", "--json"], env={"STEM_CONFIG": first}) == ["first"]
    assert task_names(["tasks", "--json", "-C", second], env={"STEM_CONFIG": first}) == ["second"]
    missing = CliRunner().invoke(app, ["-C", first, "tasks", "-C", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml: cannot read config" in missing.stderr


@pytest.mark.parametrize("position", ["before", "after"])
def test_log_flags_override_the_file(
    tmp_path: Path, stemrun_logger: logging.Logger, position: str
) -> None:
    flags = ["-C", str(project(tmp_path, "first")), "--log-level", "error"]
    args = [*flags, "tasks"] if position == "before" else ["tasks", *flags]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert stemrun_logger.level == logging.ERROR  # stem.yaml leaves the default, info


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["worker", "--pool", "fork"], ["process", "thread", "async"]),
        (["validate", "--log-level", "loud"], ["debug", "info", "warning", "error"]),
        (["--log-format", "xml", "validate"], ["text", "json"]),
        (["keys", "generate", "--algorithm", "rsa"], ["hmac-sha256", "ed25519"]),
    ],
)
def test_a_bad_choice_exits_2_naming_the_choices(args: list[str], allowed: list[str]) -> None:
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert all(f"'{value}'" in done.stderr for value in allowed), done.stderr


def test_every_command_lists_the_common_options_in_its_help() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    found = list(commands(root))
    assert ("worker",) in found and ("dlq", "list") in found and ("observe", "queues") in found
    for path in [(), *found]:
        done = CliRunner().invoke(app, [*path, "--help"])
        assert done.exit_code == 0, path
        for option in ("--config", "-C", "--log-level", "--log-format"):
            assert option in done.stdout, (path, option)
