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


def test_replay_and_purge_off_a_terminal_need_yes(project: Project) -> None:
    project.start("worker")
    task_ids = [project.run("enqueue", "flaky").stdout.strip() for _ in range(2)]
    wait_until(
        lambda: len(project.run_json("dlq", "list", "--json")) == 2, 30, "never dead-lettered"
    )
    refused = project.run("dlq", "replay", "--id", task_ids[0])
    assert refused.returncode == 2 and "--yes" in refused.stderr
    refused = project.run("dlq", "purge", "--id", task_ids[0])
    assert refused.returncode == 2 and "--yes" in refused.stderr
    unknown = project.run("dlq", "purge", "--id", "nope", "--yes")
    assert unknown.returncode == 1 and "'nope'" in unknown.stderr
    assert {d["id"] for d in project.run_json("dlq", "list", "--json")} == set(task_ids)

    by_id = project.run("dlq", "purge", "--id", task_ids[0], "--id", "nope", "--yes")
    assert by_id.returncode == 0 and "purged 1 " in by_id.stderr
    assert [d["id"] for d in project.run_json("dlq", "list", "--json")] == [task_ids[1]]
    purged = project.run("dlq", "purge", "--yes")
    assert purged.returncode == 0 and "purged 1 " in purged.stderr
    assert project.run_json("dlq", "list", "--json") == []
