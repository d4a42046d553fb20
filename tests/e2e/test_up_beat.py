"""`stemrun up` runs beat when stem.yaml has schedules, and applies schedule edits on reload."""

from __future__ import annotations

import signal

from tests.e2e.conftest import Project, wait_until

STEM_YAML = """\
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  record: {handler: "e2etasks:record"}
workers:
  main: {queues: [default], concurrency: 2, pool: thread}
beat: {tick_interval: 200ms}
schedules:
  tick:
    task: record
    spec: "every:1s"
    args: {n: 1}
"""

SECOND = (
    STEM_YAML
    + """\
  tock:
    task: record
    spec: "every:1s"
    args: {n: 2}
"""
)


def fired(project: Project, n: int) -> int:
    return project.ledger_lines().count(str(n))


def test_beat_fires_and_a_schedule_edit_is_applied_without_restarts(project: Project) -> None:
    (project.root / "stem.yaml").write_text(STEM_YAML)
    up = project.start("up")
    wait_until(lambda: fired(project, 1) >= 2, 30, "beat never fired:\n" + project.logs())
    assert "started beat pid=" in project.logs()

    (project.root / "stem.yaml").write_text(SECOND)
    wait_until(lambda: fired(project, 2) >= 2, 30, "new schedule never fired:\n" + project.logs())
    logs = project.logs()
    assert "schedules applied: added tock" in logs
    assert "reloaded: no child affected" in logs  # beat reads the store: nothing restarts

    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0


def test_no_beat_flag_runs_workers_only(project: Project) -> None:
    (project.root / "stem.yaml").write_text(STEM_YAML)
    up = project.start("up", "--no-beat", "--no-reload")
    wait_until(lambda: "consuming default" in project.logs(), 30, "no worker:\n" + project.logs())
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0
    assert "started beat" not in project.logs()
    assert fired(project, 1) == 0
