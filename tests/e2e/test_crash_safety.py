"""SIGKILL a worker mid-run: every task still succeeds, none is lost (docs/workers.md)."""

from __future__ import annotations

import collections
import os
import signal

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

TASKS = 500


def test_sigkilled_worker_loses_nothing(project: Project) -> None:
    with Stem.from_config(project.root / "stem.yaml") as stem:
        ids = stem.enqueue_many([("record", {"n": n, "sleep": 0.01}) for n in range(TASKS)])
        doomed = project.start("worker", "-n", "doomed", "-c", "2")
        project.start("worker", "-n", "survivor", "-c", "2")

        wait_until(lambda: len(project.ledger_lines()) >= TASKS // 5, 60, "workers never started")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        project.start("worker", "-n", "restarted", "-c", "2")

        def all_done() -> bool:
            return all(stem.status(i).state is TaskState.SUCCEEDED for i in ids)

        wait_until(all_done, 120, "not every task succeeded:\n" + project.logs()[-3000:])
        states = collections.Counter(stem.status(i).state for i in ids)

    runs = collections.Counter(int(line) for line in project.ledger_lines())
    assert states == {TaskState.SUCCEEDED: TASKS}
    assert set(runs) == set(range(TASKS)), "a task never ran"
    duplicates = {n: c for n, c in runs.items() if c > 1}
    print(f"tasks run twice (in flight at the kill): {len(duplicates)}")
    # Only tasks the killed worker was running can run twice: at most its concurrency.
    assert len(duplicates) <= 2 and all(c == 2 for c in duplicates.values())
