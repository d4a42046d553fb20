"""`stemrun up` hot reload under load: five edits, 2,000 tasks, none lost, none run twice."""

from __future__ import annotations

import collections
import signal
import threading
import time
from pathlib import Path

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

MAIN_TASKS = 1900  # streamed on the `default` queue while the file is edited
EXTRA_TASKS = 100  # on the queue the second edit adds
BATCH = 38

BASE = """\
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  record: {handler: "e2etasks:record", visibility_timeout: 5s}
workers:
  main:
    queues: [default]
    concurrency: 2
    pool: thread
"""

CONCURRENCY = BASE.replace("concurrency: 2", "concurrency: 3")

NEW_GROUP = (
    CONCURRENCY.replace("  default: {}\n", "  default: {}\n  extra: {}\n").replace(
        "tasks:\n",
        'tasks:\n  extra.record: {handler: "e2etasks:record", queue: extra}\n',
    )
    + "  extra:\n    queues: [extra]\n    concurrency: 1\n    pool: thread\n"
)

TASK_OPTION = NEW_GROUP.replace(
    "visibility_timeout: 5s}", "visibility_timeout: 5s, max_retries: 5}"
)

INVALID = TASK_OPTION.replace("concurrency: 3", "concurrency: lots")


def children(pid: int) -> set[int]:
    """The supervisor's child processes (Linux)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def log_count(project: Project, needle: str) -> int:
    return project.logs().count(needle)


def edit(project: Project, text: str, expect: str) -> None:
    """Save stem.yaml and wait until the supervisor has logged `expect` one more time."""
    before = log_count(project, expect)
    (project.root / "stem.yaml").write_text(text)
    wait_until(lambda: log_count(project, expect) > before, 20, f"no {expect!r}:\n{project.logs()}")


def stream(stem: Stem, ids: list[str], stop: threading.Event) -> None:
    for start in range(0, MAIN_TASKS, BATCH):
        count = min(BATCH, MAIN_TASKS - start)
        ids += stem.enqueue_many([("record", {"n": n}) for n in range(start, start + count)])
        time.sleep(0.2)
    stop.set()


def test_five_edits_under_load_lose_nothing_and_run_nothing_twice(project: Project) -> None:
    (project.root / "stem.yaml").write_text(BASE)
    up = project.start("up")
    wait_until(lambda: "consuming default" in project.logs(), 30, "no worker:\n" + project.logs())
    ids: list[str] = []
    done = threading.Event()
    with Stem.from_config(project.root / "stem.yaml") as stem:
        feeder = threading.Thread(target=stream, args=(stem, ids, done))
        feeder.start()
        try:
            edit(project, CONCURRENCY, "restarted (group changed)")
            edit(project, NEW_GROUP, "worker extra#0 added")
            extra_ids = enqueue_extra(project)
            edit(project, TASK_OPTION, "worker main#0 restarted (tasks changed)")
            wait_until(lambda: len(children(up.pid)) == 2, 30, "old children never drained")
            pids = children(up.pid)
            edit(project, INVALID, "is invalid; the running generation keeps going")
            time.sleep(0.5)
            assert children(up.pid) == pids, "an invalid edit touched the running workers"
            edit(project, BASE, "worker extra#0 removed")
        finally:
            feeder.join()
        assert done.is_set() and len(ids) == MAIN_TASKS
        all_ids = ids + extra_ids

        def all_succeeded() -> bool:
            if len(project.ledger_lines()) < len(all_ids):
                return False
            return all(stem.status(i).state is TaskState.SUCCEEDED for i in all_ids)

        wait_until(all_succeeded, 60, "not every task succeeded:\n" + project.logs()[-3000:])

    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0
    runs = collections.Counter(int(line) for line in project.ledger_lines())
    assert set(runs) == set(range(MAIN_TASKS + EXTRA_TASKS)), "a task never ran"
    assert [n for n, count in runs.items() if count > 1] == [], "a task ran twice"
    assert project.logs().count("exited unexpectedly") == 0


def enqueue_extra(project: Project) -> list[str]:
    """Tasks for the group the edit added; they must finish before the revert removes it."""
    with Stem.from_config(project.root / "stem.yaml") as stem:
        tasks = [("extra.record", {"n": n}) for n in range(MAIN_TASKS, MAIN_TASKS + EXTRA_TASKS)]
        ids = stem.enqueue_many(tasks)

        def finished() -> bool:
            return all(stem.status(i).state is TaskState.SUCCEEDED for i in ids)

        wait_until(finished, 30, "the new group never ran its tasks:\n" + project.logs()[-3000:])
    return ids
