"""`stemrun up` children: crash restarts, graceful SIGTERM, and refusals at start."""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

STEM_YAML = """\
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {{}}
tasks:
  record: {{handler: "e2etasks:record", visibility_timeout: {visibility}}}
workers:
  main:
    queues: [default]
    concurrency: 2
    pool: {pool}
"""


def children(pid: int) -> set[int]:
    """The supervisor's child processes (Linux)."""
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def write_config(project: Project, visibility: str, pool: str = "thread") -> None:
    (project.root / "stem.yaml").write_text(STEM_YAML.format(visibility=visibility, pool=pool))


def test_sigkilled_worker_is_restarted_and_its_tasks_redelivered(project: Project) -> None:
    write_config(project, "2s", pool="process")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        ids = stem.enqueue_many([("record", {"n": n, "sleep": 0.01}) for n in range(300)])
        up = project.start("up")
        wait_until(lambda: len(project.ledger_lines()) >= 30, 30, "no task ran:\n" + project.logs())
        (doomed,) = children(up.pid)
        pool = children(doomed)
        assert len(pool) == 3  # two pool children and their group keeper
        os.kill(doomed, signal.SIGKILL)
        wait_until(lambda: children(up.pid) - {doomed}, 10, "no restart:\n" + project.logs())
        # Its pool processes went with it: none finishes a task nobody would record.
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pool), 5, "orphans")

        def all_succeeded() -> bool:
            return all(stem.status(i).state is TaskState.SUCCEEDED for i in ids)

        wait_until(all_succeeded, 60, "not every task succeeded:\n" + project.logs()[-3000:])
    assert "exited unexpectedly with code -9; restarting in 0.5s" in project.logs()
    runs = collections.Counter(int(line) for line in project.ledger_lines())
    assert set(runs) == set(range(300))
    # Only the tasks running at the kill may run again: at most the concurrency.
    assert sum(1 for count in runs.values() if count > 1) <= 2


def test_sigterm_drains_in_flight_tasks_and_leaves_the_rest_queued(project: Project) -> None:
    write_config(project, "30s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        ids = stem.enqueue_many([("record", {"n": n, "sleep": 0.05}) for n in range(200)])
        up = project.start("up")
        wait_until(lambda: len(project.ledger_lines()) >= 20, 30, "no task ran:\n" + project.logs())
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
        states = collections.Counter(stem.status(i).state for i in ids)
        ran = project.ledger_lines()
        assert set(states) == {TaskState.SUCCEEDED, TaskState.QUEUED}, states
        assert states[TaskState.SUCCEEDED] == len(ran) == len(set(ran))

        # The next start picks the queued ones up at once (nothing is stuck under a lease).
        again = project.start("up")
        wait_until(lambda: len(project.ledger_lines()) >= 200, 30, "queued tasks not resumed")
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0
        assert all(stem.status(i).state is TaskState.SUCCEEDED for i in ids)
    assert sorted(int(n) for n in project.ledger_lines()) == list(range(200))


def test_only_with_an_unknown_group_exits_2_naming_the_known_ones(project: Project) -> None:
    write_config(project, "30s")
    done = project.run("up", "--only", "main,nope")
    assert done.returncode == 2
    assert "unknown worker group 'nope' (known groups: main)" in done.stderr


def test_memory_store_is_refused(project: Project) -> None:
    (project.root / "stem.yaml").write_text(
        STEM_YAML.format(visibility="30s", pool="thread").replace(
            "sqlite:///.stem/stem.db", "memory://"
        )
    )
    done = project.run("up")
    assert done.returncode == 2
    assert "cannot use memory://" in done.stderr


def test_second_sigint_kills_the_children_at_once(project: Project) -> None:
    write_config(project, "30s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        ids = stem.enqueue_many([("record", {"n": n, "sleep": 30}) for n in range(2)])
        up = project.start("up")

        def running() -> bool:
            return all(stem.status(i).state is TaskState.RUNNING for i in ids)

        wait_until(running, 30, "tasks never started:\n" + project.logs())
        worker = children(up.pid)
        up.send_signal(signal.SIGINT)
        wait_until(lambda: "stopping: draining" in project.logs(), 10, "no drain")
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=10) == 1
        assert all(not Path(f"/proc/{pid}").exists() for pid in worker)
        # Not acknowledged: they are redelivered after their lease, never lost.
        assert all(stem.status(i).state is TaskState.RUNNING for i in ids)
    assert "killing 1 children now" in project.logs()


def test_reload_code_restarts_workers_when_a_task_module_changes(project: Project) -> None:
    write_config(project, "30s")
    up = project.start("up", "--reload-code")
    wait_until(lambda: "consuming default" in project.logs(), 30, "no worker:\n" + project.logs())
    before = children(up.pid)
    module = project.root / "e2etasks.py"
    module.write_text(module.read_text() + "\n# edited\n")
    wait_until(lambda: "(code changed)" in project.logs(), 10, "no reload:\n" + project.logs())
    wait_until(lambda: children(up.pid) and not children(up.pid) & before, 20, "not replaced")
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0


def test_children_of_a_sigkilled_supervisor_drain_and_exit(project: Project) -> None:
    write_config(project, "2s", pool="process")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        task_id = stem.enqueue("record", {"n": 1, "sleep": 1.0})
        up = project.start("up")
        wait_until(lambda: stem.status(task_id).state is TaskState.RUNNING, 30, project.logs())
        (worker,) = children(up.pid)
        os.kill(up.pid, signal.SIGKILL)  # only the supervisor: its children are left behind
        wait_until(lambda: not Path(f"/proc/{worker}").exists(), 15, "orphan:\n" + project.logs())
        # It drained rather than died: the running task finished and was recorded.
        assert stem.status(task_id).state is TaskState.SUCCEEDED
    assert "its supervisor is gone" in project.logs()
    assert project.ledger_lines() == ["1"]
