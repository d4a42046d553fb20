"""A new user's first minutes: init, a worker, an enqueue that waits for its result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Project, wait_until


def test_init_then_enqueue_wait_returns_the_handlers_result(tmp_path: Path) -> None:
    proj = Project(root=tmp_path)
    try:
        init = proj.run("init")
        assert init.returncode == 0, init.stderr
        assert (tmp_path / "stem.yaml").exists() and (tmp_path / "tasks.py").exists()
        assert proj.run("validate", "--imports").returncode == 0

        proj.start("worker")
        done = proj.run(
            "enqueue", "add", "--args", '{"x": 2, "y": 40}', "--wait", "--timeout", "30s"
        )
        assert done.returncode == 0, done.stderr + proj.logs()
        status = json.loads(done.stdout)
        assert status["state"] == "succeeded"
        assert status["result"] == 42
        assert status["task"] == "add" and status["attempt"] == 0

        again = proj.run("status", status["id"], "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["result"] == 42
    finally:
        proj.stop_all()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    proj = Project(root=tmp_path)
    (tmp_path / "stem.yaml").write_text("version: 1\n")
    refused = proj.run("init")
    assert refused.returncode == 2
    assert "already exists" in refused.stderr
    assert (tmp_path / "stem.yaml").read_text() == "version: 1\n"
    assert proj.run("init", "--force").returncode == 0


def test_status_of_an_unknown_id_exits_1(project: Project) -> None:
    done = project.run("status", "no-such-id", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"id": "no-such-id", "state": "unknown"}


def test_python_dash_m_runs_the_cli(project: Project) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stemrun", "tasks", "--json"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=60,
        env=project.env(),
    )
    assert done.returncode == 0, done.stderr
    assert {row["name"] for row in json.loads(done.stdout)} >= {"record", "flaky"}


def test_sigterm_lets_the_running_task_finish(project: Project) -> None:
    """SIGTERM to the whole process group (as a terminal or systemd sends it) drains gracefully."""
    worker = project.start("worker", "-c", "1")
    task_id = project.run("enqueue", "record", "-a", "n=7", "-a", "sleep=1.5").stdout.strip()
    wait_until(
        lambda: project.run_json("status", task_id, "--json")["state"] == "running",
        20,
        "task never started",
    )
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, project.logs()
    assert project.run_json("status", task_id, "--json")["state"] == "succeeded"
    assert project.ledger_lines() == ["7"]
