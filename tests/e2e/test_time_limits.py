"""Real time limits on the process pool: hard kills and replaces the child; soft allows cleanup."""

from __future__ import annotations

from tests.e2e.conftest import Project


def test_hard_limit_kills_retries_and_the_worker_keeps_serving(project: Project) -> None:
    project.start("worker", "-c", "1")
    stuck = project.run("enqueue", "sleepy", "-a", "seconds=30").stdout.strip()
    fine = project.run("enqueue", "record", "-a", "n=1").stdout.strip()

    waited = project.run("status", stuck, "--wait", "--timeout", "40s", "--json")
    assert waited.returncode == 1, project.logs()
    status = project.run_json("status", stuck, "--json")
    assert status["state"] == "failed"
    assert status["error"]["type"] == "HardTimeLimitExceeded"
    assert status["attempt"] == 1, "max_retries: 1 means two runs"

    assert project.run("status", fine, "--wait", "--timeout", "20s").returncode == 0
    assert project.ledger_lines() == ["1"]


def test_soft_limit_raises_inside_the_task_and_cleanup_runs(project: Project) -> None:
    project.start("worker", "-c", "1")
    task_id = project.run("enqueue", "careful", "-a", "seconds=10").stdout.strip()
    waited = project.run("status", task_id, "--wait", "--timeout", "30s", "--json")
    assert waited.returncode == 1, project.logs()
    status = project.run_json("status", task_id, "--json")
    assert status["error"]["type"] == "SoftTimeLimitExceeded"
    assert project.ledger_lines() == ["cleanup ran"]
