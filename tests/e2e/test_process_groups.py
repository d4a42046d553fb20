"""A task's subprocesses end with the pool child that ran it (docs/workers.md).

Each task here starts two `sleep` processes: one it spawns itself, one spawned by a process it
spawned (a grandchild, left in its process group). Whatever ends the child (its hard time limit,
its own death, its recycling, the worker's stop, forced or not, or the worker's SIGKILL), no such
`sleep` may remain: nobody would ever stop it. Each test's sleeps carry a unique duration
(`sleep 60.<random digits>`), found by scanning /proc/*/cmdline.
"""

from __future__ import annotations

import os
import secrets
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

GROUP_MODULE = '''
import os
import signal
import subprocess
import sys
import time

from stemrun import SoftTimeLimitExceeded

LEDGER = os.environ.get("E2E_LEDGER", "ledger.txt")
# a process of the task that starts its own sleep, in the same process group, and says so
GRANDCHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen(['sleep', sys.argv[1]], start_new_session=False); "
    "print('started', flush=True); time.sleep(60)"
)


def spawn(marker: str) -> None:
    """Start a sleep and a process that starts another one; neither is waited for."""
    subprocess.Popen(["sleep", marker])
    grandchild = subprocess.Popen(
        [sys.executable, "-c", GRANDCHILD, marker], stdout=subprocess.PIPE, start_new_session=False
    )
    assert grandchild.stdout is not None and grandchild.stdout.readline() == b"started\\n"
    with open(LEDGER, "a") as ledger:
        ledger.write(f"spawned by {os.getpid()}\\n")


def stubborn(marker: str) -> None:
    """Ignore the soft time limit until the hard one kills this child."""
    spawn(marker)
    while True:
        try:
            time.sleep(60)
        except SoftTimeLimitExceeded:
            continue


def hold(marker: str) -> None:
    spawn(marker)
    time.sleep(60)


def crash(marker: str) -> None:
    spawn(marker)
    os.kill(os.getpid(), signal.SIGKILL)


def leave(marker: str) -> str:
    """Return at once, leaving the sleeps behind."""
    spawn(marker)
    return "left"
'''

STEM_YAML = """
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  stubborn:
    handler: "grouptasks:stubborn"
    soft_time_limit: 300ms
    hard_time_limit: 1500ms
    max_retries: 0
  hold: {handler: "grouptasks:hold", max_retries: 0}
  crash: {handler: "grouptasks:crash", max_retries: 0}
  leave: {handler: "grouptasks:leave"}
workers:
  default:
    queues: [default]
    concurrency: 1
    shutdown_timeout: 1s
  recycling:
    queues: [default]
    concurrency: 1
    max_tasks_per_child: 1
"""

#: sleep, the grandchild's interpreter and its sleep
SPAWNED = 3
#: How long the sleeps may outlive what ended their child.
GRACE_S = 2.0


def marked(marker: str) -> list[int]:
    """The running processes whose command line holds `marker` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it exited meanwhile
        if marker.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.fixture
def marker(project: Project) -> Iterator[str]:
    """The project with the group tasks, and this test's unique sleep duration."""
    (project.root / "grouptasks.py").write_text(GROUP_MODULE)
    (project.root / "stem.yaml").write_text(textwrap.dedent(STEM_YAML))
    value = f"60.{secrets.randbelow(10**9):09d}"
    yield value
    for pid in marked(value):  # never leave a failed test's sleeps behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def enqueue(project: Project, task: str, marker: str) -> str:
    with Stem.from_config(project.root / "stem.yaml") as stem:
        return stem.enqueue(task, {"marker": marker})


def wait_for_spawned(project: Project) -> int:
    """Wait until the task started its sleeps; the pid of the pool child running it."""
    wait_until(
        lambda: len(project.ledger_lines()) == 1,
        30,
        "the task never started its sleeps:\n" + project.logs()[-3000:],
    )
    (line,) = project.ledger_lines()
    return int(line.removeprefix("spawned by "))


def assert_none_left(marker: str, after: str) -> None:
    try:
        wait_until(lambda: not marked(marker), GRACE_S, "")
    except AssertionError:
        raise AssertionError(f"{marked(marker)} outlived {after} by {GRACE_S} s") from None


def wait_for_state(project: Project, task_id: str, state: TaskState) -> dict[str, str] | None:
    with Stem.from_config(project.root / "stem.yaml") as stem:
        wait_until(
            lambda: stem.status(task_id).state is state,
            30,
            f"never {state}:\n" + project.logs()[-3000:],
        )
        return stem.status(task_id).error


def test_a_hard_time_limit_kills_the_task_s_subprocesses(project: Project, marker: str) -> None:
    project.start("worker")
    task_id = enqueue(project, "stubborn", marker)
    wait_for_spawned(project)
    error = wait_for_state(project, task_id, TaskState.FAILED)
    assert error is not None and error["type"] == "HardTimeLimitExceeded"
    assert_none_left(marker, "the hard time limit")


def test_a_child_that_dies_takes_its_task_s_subprocesses(project: Project, marker: str) -> None:
    project.start("worker")
    task_id = enqueue(project, "crash", marker)
    wait_for_spawned(project)
    error = wait_for_state(project, task_id, TaskState.FAILED)
    assert error is not None and error["type"] == "WorkerLostError"
    assert_none_left(marker, "the child's death")


def test_a_recycled_child_takes_what_its_tasks_left(project: Project, marker: str) -> None:
    project.start("worker", "--group", "recycling")
    task_id = enqueue(project, "leave", marker)
    wait_for_state(project, task_id, TaskState.SUCCEEDED)
    wait_for_spawned(project)
    assert_none_left(marker, "the recycled child")


def test_a_graceful_stop_takes_what_the_tasks_left(project: Project, marker: str) -> None:
    worker = project.start("worker")
    task_id = enqueue(project, "leave", marker)
    wait_for_state(project, task_id, TaskState.SUCCEEDED)
    assert len(marked(marker)) == SPAWNED, "a finished task's processes run until its child ends"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, project.logs()
    assert_none_left(marker, "the graceful stop")


def test_a_forced_stop_kills_the_running_task_s_subprocesses(project: Project, marker: str) -> None:
    worker = project.start("worker")
    enqueue(project, "hold", marker)
    wait_for_spawned(project)
    worker.send_signal(signal.SIGTERM)  # the task runs past the 1 s shutdown_timeout
    assert worker.wait(timeout=10) == 1, project.logs()
    assert_none_left(marker, "the forced stop")


def test_a_sigkilled_worker_leaves_no_subprocess_behind(project: Project, marker: str) -> None:
    worker = project.start("worker")
    enqueue(project, "hold", marker)
    child = wait_for_spawned(project)
    # Stopped, the child cannot act on its worker's death: the kernel just kills it with the
    # worker, as it may any child busy in C code, and something else must end its group.
    os.kill(child, signal.SIGSTOP)
    os.kill(worker.pid, signal.SIGKILL)  # the worker's process only, not its group
    worker.wait(timeout=10)
    assert_none_left(marker, "the SIGKILLed worker")
