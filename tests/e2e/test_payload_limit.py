"""`limits.max_payload` as a user meets it: large `--args` from a file or stdin, a refused enqueue
that stores nothing, a task allowed more, and a worker that dead-letters an oversized message
published behind stemrun's back without running its handler."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stemrun.brokers.base import Message
from stemrun.client import Stem
from stemrun.envelope import Envelope, encode
from tests.e2e.conftest import STEMRUN, Project

MIB = 1024 * 1024

TASKS = '''
import os

LEDGER = os.environ["E2E_LEDGER"]


def take(blob: str) -> int:
    """Note the size of what it was given in the ledger (one line per run)."""
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{len(blob)}\\n")
    return len(blob)
'''

STEM_YAML = """
version: 1
broker: {broker}
namespace: {namespace}
queues:
  default: {{}}
tasks:
  take: {{handler: "payloadtasks:take"}}
  bulk:
    handler: "payloadtasks:take"
    limits: {{max_payload: 4MiB}}
workflows:
  ingest:
    chain:
      - {{task: take}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "payloadtasks.py").write_text(TASKS)
    return configured(tmp_path, "sqlite:///.stem/stem.db", "stem")


def configured(root: Path, broker: str, namespace: str) -> Project:
    yaml = STEM_YAML.format(broker=broker, namespace=namespace)
    (root / "stem.yaml").write_text(textwrap.dedent(yaml))
    return Project(root=root)


def write_args(project: Project, name: str, size: int) -> str:
    """A JSON args file `{"blob": "xxx..."}` of about `size` bytes; its name."""
    (project.root / name).write_text(json.dumps({"blob": "x" * size}))
    return name


def with_stdin(project: Project, data: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [STEMRUN, *args],
        cwd=project.root,
        env=project.env(),
        input=data,
        capture_output=True,
        timeout=60,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def state(project: Project, task_id: str) -> Any:
    return project.run_json("status", task_id, "--json")["state"]


def pending(project: Project) -> int:
    return sum(
        q["pending"] + q["in_flight"] for q in project.run_json("observe", "queues", "--json")
    )


def test_an_enqueue_over_the_limit_exits_2_and_stores_nothing(project: Project) -> None:
    big = write_args(project, "big.json", 2 * MIB)
    assert project.run("enqueue", "take", "-a", "blob=small").returncode == 0  # creates the store
    assert project.run("worker", "--burst").returncode == 0

    done = project.run("enqueue", "take", "--args", f"@{big}", "--id", "too-big")
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "task 'take': its message encodes to 2.0 MiB (" in done.stderr
    assert "over its limit of 1 MiB (limits.max_payload)" in done.stderr
    assert state(project, "too-big") == "unknown"
    assert pending(project) == 0

    workflow = project.run("workflow", "run", "ingest", "--args", f"@{big}")
    assert workflow.returncode == 2 and "over its limit of 1 MiB" in workflow.stderr
    assert workflow.stdout == ""
    assert pending(project) == 0
    assert project.run("worker", "--burst").returncode == 0
    assert project.ledger_lines() == ["5"], "only the small task ran"


def test_a_task_with_a_larger_limit_takes_large_args_from_a_file_or_stdin(
    project: Project,
) -> None:
    big = write_args(project, "big.json", 2 * MIB)
    from_file = project.run("enqueue", "bulk", "--args", f"@{big}")
    assert from_file.returncode == 0, from_file.stderr
    piped = json.dumps({"blob": "y" * (3 * MIB)}).encode()
    from_stdin = with_stdin(project, piped, "enqueue", "bulk", "--args", "-")
    assert from_stdin.returncode == 0, from_stdin.stderr
    small = with_stdin(project, b'{"blob": "abc"}', "workflow", "run", "ingest", "--args", "-")
    assert small.returncode == 0, small.stderr

    assert project.run("worker", "--burst").returncode == 0
    assert sorted(project.ledger_lines()) == sorted([str(2 * MIB), str(3 * MIB), "3"])
    for task_id in (from_file.stdout.strip(), from_stdin.stdout.strip(), small.stdout.strip()):
        assert state(project, task_id) == "succeeded"


def test_an_args_file_that_is_missing_or_not_json_exits_2_naming_it(project: Project) -> None:
    missing = project.run("enqueue", "take", "--args", "@nope.json")
    assert missing.returncode == 2
    assert "--args @nope.json: cannot read 'nope.json': No such file or directory" in (
        missing.stderr
    )
    (project.root / "bad.json").write_text("{not json")
    for command in (["enqueue", "take"], ["workflow", "run", "ingest"]):
        done = project.run(*command, "--args", "@bad.json")
        assert done.returncode == 2, done.stderr
        assert "--args @bad.json is not valid JSON" in done.stderr
    bad_stdin = with_stdin(project, b"[1, 2", "enqueue", "take", "--args", "-")
    assert bad_stdin.returncode == 2 and "--args - (stdin) is not valid JSON" in bad_stdin.stderr
    assert not (project.root / ".stem").exists(), "nothing was published"


def publish_raw(project: Project, task_id: str, size: int) -> None:
    """Put a well-formed `take` message of `size` bytes of args straight into the broker."""
    with Stem.from_config(project.root / "stem.yaml") as stem:
        envelope = Envelope(id=task_id, task="take", queue="default", args={"blob": "z" * size})
        stem.broker.publish([Message(id=task_id, queue="default", body=encode(envelope))])


def assert_dead_too_large(project: Project, task_id: str) -> None:
    assert project.run("worker", "--burst").returncode == 0, project.logs()
    assert project.ledger_lines() == ["1"], "the oversized message's handler ran"
    dead = {row["id"]: row for row in project.run_json("dlq", "list", "--json")}
    assert dead[task_id]["reason"] == "too-large"
    assert dead[task_id]["error"]["type"] == "PayloadTooLarge"
    assert (
        "larger than the largest limits.max_payload of any task (4 MiB)"
        in (dead[task_id]["error"]["message"])
    )


def test_a_worker_dead_letters_an_oversized_message_without_running_it(project: Project) -> None:
    publish_raw(project, "raw-big", 5 * MIB)
    publish_raw(project, "raw-small", 1)
    assert_dead_too_large(project, "raw-big")


def test_a_worker_on_redis_dead_letters_an_oversized_message(
    tmp_path: Path, redis_url: str, redis_namespace: str
) -> None:
    (tmp_path / "payloadtasks.py").write_text(TASKS)
    project = configured(tmp_path, redis_url, redis_namespace)
    publish_raw(project, "raw-big", 5 * MIB)
    publish_raw(project, "raw-small", 1)
    assert_dead_too_large(project, "raw-big")
