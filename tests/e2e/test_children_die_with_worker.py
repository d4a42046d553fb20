"""SIGKILL a worker mid-task: its pool children stop within 1 s, quietly (docs/workers.md).

Otherwise the child finishes the task nobody will record, and it runs again after redelivery.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

from stemrun.client import Stem
from tests.e2e.conftest import Project, wait_until

SLOW_MODULE = '''
import os
import time
from pathlib import Path


def slow(marker_dir: str, seconds: float) -> str:
    """Say it started (with this process's pid), sleep, then say it finished."""
    Path(marker_dir, "started").write_text(str(os.getpid()))
    time.sleep(seconds)
    Path(marker_dir, "finished").write_text("the task ran on after its worker died")
    return "done"
'''

STEM_YAML = """
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  slow: {handler: "slowtasks:slow"}
workers:
  default:
    queues: [default]
    concurrency: 2
"""

TASK_SECONDS = 2.0


def _children(pid: int) -> set[int]:
    """The pids whose parent is `pid` (any thread of it), read from /proc."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        # the fields after the parenthesised command name: state, ppid, ...
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting to be reaped has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_pool_children_stop_within_a_second_of_a_sigkilled_worker(project: Project) -> None:
    (project.root / "slowtasks.py").write_text(SLOW_MODULE)
    (project.root / "stem.yaml").write_text(textwrap.dedent(STEM_YAML))
    started = project.root / "started"
    finished = project.root / "finished"
    with Stem.from_config(project.root / "stem.yaml") as stem:
        stem.enqueue("slow", {"marker_dir": str(project.root), "seconds": TASK_SECONDS})
    worker = project.start("worker", "-n", "doomed")

    wait_until(started.exists, 30, "the task never started:\n" + project.logs()[-3000:])
    running = int(started.read_text())
    children = _children(worker.pid)
    assert running in children, "the task should run in a pool child of the worker"
    assert len(children) == 3, "one child per slot, the idle one too, and their group keeper"

    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = sorted(pid for pid in children if _alive(pid))
    assert survivors == [], f"pool children {survivors} outlived their worker by 1 s"
    worker.wait(timeout=10)

    time.sleep(TASK_SECONDS + 0.5)  # past the moment the task would have finished
    assert not finished.exists(), "the task ran on, unrecorded, after its worker died"
    logs = project.logs()
    assert "BrokenPipeError" not in logs
    assert "Traceback" not in logs
