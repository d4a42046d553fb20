"""`stemrun workflow` end to end: chains driven by worker processes, bad input.

The project (also used by test_workflow_chord.py): a profile chain and a 50-member image chord.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, wait_until

CHORD_SIZE = 50

TASKS_MODULE = """
import json
import os
import time

LEDGER = os.environ.get("E2E_LEDGER", "ledger.txt")


def note(line):
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")


def fetch(user_id):
    note(f"fetch {user_id}")
    return {"user": user_id}


def enrich(previous):
    note(f"enrich {json.dumps(previous, sort_keys=True)}")
    return {**previous, "plan": "pro"}


def cache(previous):
    note(f"cache {json.dumps(previous, sort_keys=True)}")
    return {**previous, "cached": True}


def broken(previous):
    note("broken")
    raise ConnectionError("the profile cache is down")


def resize(size, sleep=0.0, fail_on=None):
    time.sleep(sleep)
    if size == fail_on:
        note(f"resize {size} failed")
        raise ConnectionError(f"cannot resize {size}")
    note(f"resize {size}")
    return f"img@{size}"


def publish(results):
    note("publish " + json.dumps(results))
    return len(results)
"""

STEM_YAML = """
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  profile.fetch: {handler: "wftasks:fetch"}
  profile.enrich: {handler: "wftasks:enrich"}
  profile.cache: {handler: "wftasks:cache"}
  profile.broken:
    handler: "wftasks:broken"
    max_retries: 1
    retry_backoff: {initial: 50ms, max: 50ms, jitter: false}
  image.resize:
    handler: "wftasks:resize"
    visibility_timeout: 3s
    max_retries: 2
    retry_backoff: {initial: 50ms, max: 100ms, jitter: false}
  image.publish: {handler: "wftasks:publish"}
workers:
  default:
    queues: [default]
    concurrency: 2
workflows:
  onboarding:
    chain:
      - {task: profile.fetch}
      - {task: profile.enrich}
      - {task: profile.cache}
  broken-onboarding:
    chain:
      - {task: profile.fetch}
      - {task: profile.broken}
      - {task: profile.cache}
  thumbnails:
    chord:
      body:
BODY
      callback: {task: image.publish}
"""


def make_project(root: Path) -> Project:
    """Write the task module and stem.yaml into `root`."""
    body = "\n".join(
        f"        - {{task: image.resize, args: {{size: {n}}}}}" for n in range(CHORD_SIZE)
    )
    (root / "wftasks.py").write_text(TASKS_MODULE)
    (root / "stem.yaml").write_text(textwrap.dedent(STEM_YAML).replace("BODY", body))
    return Project(root=root)


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[Project]:
    """A fresh workflow project; its processes are killed afterwards."""
    project = make_project(tmp_path)
    yield project
    project.stop_all()


def test_run_wait_drives_the_chain_in_order_with_previous(wf: Project) -> None:
    wf.start("worker", "-n", "w1")
    wf.start("worker", "-n", "w2")
    done = wf.run("workflow", "run", "onboarding", "--args", '{"user_id": 7}', "--wait")
    assert done.returncode == 0, done.stderr + wf.logs()[-3000:]
    final = json.loads(done.stdout)
    assert final["state"] == "succeeded" and final["task"] == "onboarding"
    assert final["result"] == {"user": 7, "plan": "pro", "cached": True}
    assert (final["total"], final["succeeded"]) == (3, 3)
    assert wf.ledger_lines() == [
        "fetch 7",
        'enrich {"user": 7}',
        'cache {"plan": "pro", "user": 7}',
    ]


def test_the_chain_completes_after_the_producer_exits(wf: Project) -> None:
    started = wf.run("workflow", "run", "onboarding", "--args", '{"user_id": 3}')
    assert started.returncode == 0, started.stderr
    workflow_id = started.stdout.strip()
    queued = wf.run_json("status", workflow_id, "--json")
    assert queued["state"] == "queued" and queued["members"][1]["state"] == "pending"
    wf.start("worker", "-n", "late")  # only now: the producer is long gone
    done = wf.run("status", workflow_id, "--wait", "--timeout", "60s", "--json")
    assert done.returncode == 0, done.stdout + wf.logs()[-3000:]
    final = json.loads(done.stdout)
    assert final["result"]["cached"] is True
    assert [m["state"] for m in final["members"]] == ["succeeded"] * 3
    text = wf.run("status", workflow_id)
    assert "3/3 completed" in text.stdout and f"{workflow_id}.2" in text.stdout


def test_a_failing_step_stops_the_chain(wf: Project) -> None:
    wf.start("worker")
    done = wf.run("workflow", "run", "broken-onboarding", "--args", '{"user_id": 1}', "--wait")
    assert done.returncode == 1, done.stderr
    final = json.loads(done.stdout)
    workflow_id = final["id"]
    assert final["state"] == "failed"
    assert final["meta"]["failed_step"] == f"{workflow_id}.1"
    assert f"{workflow_id}.1" in final["error"]["message"]
    assert [m["state"] for m in final["members"]] == ["succeeded", "failed", "pending"]
    wait_until(lambda: wf.ledger_lines().count("broken") == 2, 10, "no retry of the step")
    assert not any(line.startswith("cache") for line in wf.ledger_lines())


def test_unknown_workflow_exits_2_with_the_known_names(wf: Project) -> None:
    done = wf.run("workflow", "run", "onbaording")
    assert done.returncode == 2
    assert "onbaording" in done.stderr
    assert "broken-onboarding, onboarding, thumbnails" in done.stderr
    assert done.stdout == ""


def test_a_step_naming_an_undeclared_task_is_a_config_error(wf: Project) -> None:
    yaml = (wf.root / "stem.yaml").read_text()
    (wf.root / "stem.yaml").write_text(
        yaml.replace("{task: profile.cache}", "{task: profile.cach}")
    )
    checked = wf.run("validate")
    assert checked.returncode == 2
    assert "workflows.onboarding.chain[2].task: task 'profile.cach' is not declared" in (
        checked.stderr
    )
    assert wf.run("workflow", "run", "onboarding").returncode == 2


def test_workflow_list_shows_name_kind_and_steps(wf: Project) -> None:
    text = wf.run("workflow", "list")
    assert text.returncode == 0
    assert "profile.fetch -> profile.enrich -> profile.cache" in text.stdout
    rows = wf.run_json("workflow", "list", "--json")
    by_name = {row["name"]: row for row in rows}
    assert by_name["thumbnails"]["kind"] == "chord"
    assert len(by_name["thumbnails"]["steps"]) == CHORD_SIZE
    assert by_name["thumbnails"]["callback"]["task"] == "image.publish"
