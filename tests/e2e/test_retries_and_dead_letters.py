"""A failing task is retried exactly max_retries times, dead-lettered, and replayed once fixed."""

from __future__ import annotations

from tests.e2e.conftest import Project, wait_until


def test_retries_then_dead_letter_then_replay_succeeds(project: Project) -> None:
    project.start("worker")
    task_id = project.run("enqueue", "flaky").stdout.strip()

    waited = project.run("status", task_id, "--wait", "--timeout", "30s", "--json")
    assert waited.returncode == 1, "a failed task must exit 1 with --wait"
    assert project.ledger_lines() == ["flaky attempt 0", "flaky attempt 1", "flaky attempt 2"]

    status = project.run_json("status", task_id, "--json")
    assert status["state"] == "failed"
    assert status["dead_letter_reason"] == "max-retries-exhausted"
    assert status["error"]["type"] == "ConnectionError"

    dead = project.run_json("dlq", "list", "--json")
    assert [(d["id"], d["reason"], d["task"]) for d in dead] == [
        (task_id, "max-retries-exhausted", "flaky")
    ]
    shown = project.run("dlq", "show", task_id)
    assert shown.returncode == 0 and "downstream still broken" in shown.stdout

    (project.root / "fixed").touch()
    replay = project.run("dlq", "replay", "--id", task_id, "--yes")
    assert replay.returncode == 0, replay.stderr

    final = project.run("status", task_id, "--wait", "--timeout", "30s", "--json")
    assert final.returncode == 0, final.stdout + project.logs()
    record = project.run_json("status", task_id, "--json")
    assert record["state"] == "succeeded" and record["result"] == "fixed"
    assert record["meta"]["replays"] == 1
    assert project.run_json("dlq", "list", "--json") == []


def test_replay_off_a_terminal_needs_yes(project: Project) -> None:
    project.start("worker")
    task_id = project.run("enqueue", "flaky").stdout.strip()
    wait_until(lambda: project.run_json("dlq", "list", "--json") != [], 30, "never dead-lettered")
    refused = project.run("dlq", "replay", "--id", task_id)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert [d["id"] for d in project.run_json("dlq", "list", "--json")] == [task_id]
    purged = project.run("dlq", "purge", "--yes")
    assert purged.returncode == 0
    assert project.run_json("dlq", "list", "--json") == []
