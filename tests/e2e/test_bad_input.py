"""Bad input gets the documented message and exit 2, and changes nothing in the store."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import Project


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("version: 1\ntasks: [unclosed\n", "stem.yaml:2:"),
        (
            "version: 1\ntasks:\n  t:\n    handler: m:f\n    max_retrys: 3\n",
            "stem.yaml:5:5: tasks.t.max_retrys: unknown key 'max_retrys' "
            "(did you mean 'max_retries'?)",
        ),
        ("version: 1\ntasks:\n  t:\n    handler: m:f\n    max_retries: five\n", "stem.yaml:5:18:"),
        ("version: 1\nbroker: ${NO_SUCH_STEM_VAR}\n", "NO_SUCH_STEM_VAR"),
        ("version: 1\ntasks:\n  t: {handler: m:f, queue: nowhere}\n", "nowhere"),
    ],
    ids=["malformed-yaml", "unknown-key", "wrong-type", "missing-env", "undeclared-queue"],
)
def test_invalid_config_exits_2_with_location(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    project = Project(root=tmp_path)
    (tmp_path / "stem.yaml").write_text(yaml_text)
    for command in (["validate"], ["enqueue", "t"], ["worker", "--burst"]):
        done = project.run(*command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert expected in done.stderr, (command, done.stderr)
    assert not (tmp_path / ".stem").exists(), "an invalid config must not create a store"


def test_handler_that_does_not_import_fails_validate_imports(tmp_path: Path) -> None:
    project = Project(root=tmp_path)
    (tmp_path / "stem.yaml").write_text(
        textwrap.dedent("""
        version: 1
        tasks:
          broken: {handler: "no_such_module_here:run"}
        """)
    )
    assert project.run("validate").returncode == 0, "without --imports handlers are not imported"
    done = project.run("validate", "--imports")
    assert done.returncode == 2
    assert "tasks.broken.handler" in done.stderr and "no_such_module_here" in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["enqueue", "nope"], "task 'nope' is not declared"),
        (["enqueue", "record", "--args", "{not json"], "--args is not valid JSON"),
        (["enqueue", "record", "--args", "[1, 2]"], "--args must be a JSON object"),
        (["enqueue", "record", "-Q", "elsewhere"], "queue 'elsewhere' is not declared"),
        (["enqueue", "record", "--priority", "12"], "priority must be between 0 and 9"),
        (["enqueue", "record", "--countdown", "soon"], "--countdown"),
        (["enqueue", "record", "-a", "novalue"], "--arg expects key=value"),
    ],
)
def test_bad_enqueue_exits_2_and_publishes_nothing(
    project: Project, args: list[str], expected: str
) -> None:
    project.run("enqueue", "record", "-a", "n=1")  # create the store first
    done = project.run(*args)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert done.stdout == ""
    assert project.run("worker", "--burst").returncode == 0
    assert project.ledger_lines() == ["1"], "only the valid task ran"


def test_worker_refuses_memory_broker(tmp_path: Path) -> None:
    project = Project(root=tmp_path)
    (tmp_path / "stem.yaml").write_text("version: 1\nbroker: memory://\n")
    done = project.run("worker")
    assert done.returncode == 2
    assert "memory://" in done.stderr
