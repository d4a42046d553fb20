"""A warm stop is bounded by the group's `shutdown_timeout`, and a second signal forces it.

A task holds its slot until the file `release` exists, so the stop meets a running task every
time. A forced stop exits 1, leaves no pool process behind and loses nothing: the unfinished task
stays leased and is redelivered to the next worker after its `visibility_timeout`. A reload's
drain is not bounded: the replaced worker finishes its task, which runs once.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

HOLD_MODULE = '''
import os
import time

LEDGER = os.environ.get("E2E_LEDGER", "ledger.txt")


def hold(n: int) -> int:
    """Runs until the file `release` exists next to the ledger (a minute at most)."""
    release = os.path.join(os.path.dirname(LEDGER) or ".", "release")
    with open(LEDGER, "a") as ledger:
        ledger.write(f"started {n}\\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(LEDGER, "a") as ledger:
        ledger.write(f"done {n}\\n")
    return n
'''

STEM_YAML = """\
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {{}}
tasks:
  hold: {{handler: "holdtasks:hold", visibility_timeout: 2s}}
workers:
  main:
    queues: [default]
    concurrency: {concurrency}
    pool: process
    shutdown_timeout: {timeout}
"""


def setup(project: Project, timeout: str, concurrency: int = 1) -> str:
    (project.root / "holdtasks.py").write_text(HOLD_MODULE)
    text = STEM_YAML.format(timeout=timeout, concurrency=concurrency)
    (project.root / "stem.yaml").write_text(text)
    return text


def children(pid: int) -> set[int]:
    """The child processes of `pid` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def timed_exit(proc: subprocess.Popen[bytes], limit: float) -> tuple[int, float]:
    """Wait up to `limit` seconds for `proc`; its exit code and how long it took."""
    started = time.monotonic()
    code = proc.wait(timeout=limit)
    return code, time.monotonic() - started


def start_holding(project: Project, stem: Stem, *args: str) -> tuple[str, subprocess.Popen[bytes]]:
    """Enqueue one holding task, start `stemrun ARGS`, and wait until the task runs."""
    task_id = stem.enqueue("hold", {"n": 1})
    proc = project.start(*args)
    wait_until(
        lambda: stem.status(task_id).state is TaskState.RUNNING, 30, "never ran:\n" + project.logs()
    )
    return task_id, proc


def finishes_on_a_new_worker(project: Project, stem: Stem, task_id: str) -> None:
    """The task was not lost: released, it is redelivered to a new worker and succeeds once."""
    assert stem.status(task_id).state is TaskState.RUNNING  # still leased, neither lost nor failed
    (project.root / "release").touch()
    project.start("worker", "--group", "main")
    wait_until(
        lambda: stem.status(task_id).state is TaskState.SUCCEEDED,
        30,
        "not redelivered:\n" + project.logs()[-3000:],
    )
    assert project.ledger_lines() == ["started 1", "started 1", "done 1"]


def test_worker_stop_is_forced_after_shutdown_timeout(project: Project) -> None:
    setup(project, "1s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        task_id, worker = start_holding(project, stem, "worker", "--group", "main")
        pool = children(worker.pid)
        assert pool
        worker.send_signal(signal.SIGTERM)
        code, took = timed_exit(worker, 15)
        assert code == 1
        assert 1.0 <= took < 6.0, took
        assert not any(alive(pid) for pid in pool), "a pool process outlived the forced stop"
        assert "forcing the stop" in project.logs()
        finishes_on_a_new_worker(project, stem, task_id)


def test_second_sigterm_forces_the_worker_stop_at_once(project: Project) -> None:
    setup(project, "60s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        task_id, worker = start_holding(project, stem, "worker", "--group", "main")
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: "waiting up to 60s" in project.logs(), 10, "no warm stop")
        worker.send_signal(signal.SIGTERM)
        code, took = timed_exit(worker, 10)
        assert code == 1
        assert took < 5.0, took
        finishes_on_a_new_worker(project, stem, task_id)


def test_up_stop_is_forced_after_shutdown_timeout(project: Project) -> None:
    setup(project, "1s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        task_id, up = start_holding(project, stem, "up")
        (worker,) = children(up.pid)
        processes = {worker, *children(worker)}
        up.send_signal(signal.SIGTERM)
        code, took = timed_exit(up, 20)
        assert code == 1
        assert 1.0 <= took < 8.0, took
        assert not any(alive(pid) for pid in processes), "a child outlived the forced stop"
        assert "forcing its stop" in project.logs()
        finishes_on_a_new_worker(project, stem, task_id)


def test_second_sigterm_stops_up_at_once(project: Project) -> None:
    setup(project, "60s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        task_id, up = start_holding(project, stem, "up")
        (worker,) = children(up.pid)
        up.send_signal(signal.SIGTERM)
        wait_until(
            lambda: "stopping: draining 1 children for at most 60s" in project.logs(), 10, ""
        )
        up.send_signal(signal.SIGTERM)
        code, took = timed_exit(up, 15)
        assert code == 1
        assert took < 8.0, took
        assert not alive(worker)
        finishes_on_a_new_worker(project, stem, task_id)


def test_a_reload_drain_is_not_bounded_by_shutdown_timeout(project: Project) -> None:
    text = setup(project, "1s")
    with Stem.from_config(project.root / "stem.yaml") as stem:
        task_id, up = start_holding(project, stem, "up")
        (old,) = children(up.pid)
        (project.root / "stem.yaml").write_text(text.replace("concurrency: 1", "concurrency: 2"))
        wait_until(lambda: "draining worker main#0" in project.logs(), 30, project.logs())
        time.sleep(3.0)  # three times the shutdown_timeout: the replaced worker still drains
        assert alive(old)
        assert stem.status(task_id).state is TaskState.RUNNING
        (project.root / "release").touch()
        wait_until(lambda: stem.status(task_id).state is TaskState.SUCCEEDED, 30, project.logs())
        wait_until(lambda: not alive(old), 10, "the replaced worker did not exit")
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    assert project.ledger_lines() == ["started 1", "done 1"]
