"""A reload whose new generation cannot start is refused: the running one keeps serving.

`stemrun up` runs on SQLite; stem.yaml is then saved with a store that cannot be opened (a
Postgres schema or database that does not exist, a port nobody listens on) or a handler that
does not import. The reload must be refused like an invalid file: logged, counted in
`stem_config_reload_failures_total`, the workers untouched (same pids) and still running what is
enqueued afterwards.
"""

from __future__ import annotations

import signal
import socket
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from stemrun.client import Stem
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until
from tests.services import require_postgres

BASE = """\
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {{}}
tasks:
  record: {{handler: "e2etasks:record", visibility_timeout: 5s}}
workers:
  main:
    queues: [default]
    concurrency: 2
    pool: thread
metrics:
  port: {port}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> set[int]:
    """The supervisor's child processes (Linux)."""
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def missing_schema() -> str:
    url = require_postgres()
    schema = f"stem_missing_{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def missing_database() -> str:
    url = require_postgres()
    base, _, _ = url.rpartition("/")
    return f"{base}/stem_missing_{uuid.uuid4().hex[:8]}"


# (stem.yaml key, what the refusal says, the URL it needs)
BROKEN_STORES: dict[str, tuple[str, str, Callable[[], str]]] = {
    "result_backend in a missing schema": (
        "result_backend",
        "the search_path names no existing schema",
        missing_schema,
    ),
    "result_backend in a missing database": ("result_backend", "does not exist", missing_database),
    "broker on a closed port": ("broker", "Connection refused", lambda: "redis://127.0.0.1:1/0"),
}


def with_store(text: str, key: str, url: str) -> str:
    """`text` with top-level `key` set to `url`."""
    lines = [line for line in text.splitlines() if not line.startswith(f"{key}:")]
    return "\n".join([*lines, f"{key}: {url}", ""])


class Up:
    """`stemrun up` in `project`, with a Stem client on a copy of the first config."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.port = free_port()
        self.text = BASE.format(port=self.port)
        (project.root / "stem.yaml").write_text(self.text)
        (project.root / "good.yaml").write_text(self.text)  # producers keep using the old stores
        self.proc = project.start("up")
        wait_until(lambda: "consuming default" in project.logs(), 30, "no worker:\n" + self.logs)

    @property
    def logs(self) -> str:
        return self.project.logs()

    def save(self, text: str, expect: str) -> None:
        """Save stem.yaml and wait until the supervisor logs `expect` one more time."""
        before = self.logs.count(expect)
        (self.project.root / "stem.yaml").write_text(text)
        wait_until(lambda: self.logs.count(expect) > before, 30, f"no {expect!r}:\n{self.logs}")

    def run_tasks(self, first: int, count: int, task: str = "record") -> None:
        """Enqueue `count` tasks and wait until every one succeeded."""
        with Stem.from_config(self.project.root / "good.yaml") as stem:
            args = [{"n": n} for n in range(first, first + count)] if task == "record" else [{}]
            ids = stem.enqueue_many([(task, a) for a in args])

            def done() -> bool:
                return all(stem.status(i).state is TaskState.SUCCEEDED for i in ids)

            wait_until(done, 30, "tasks did not complete:\n" + self.logs[-3000:])

    def reload_failures(self) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics?name[]=stem_config_reload_failures_total"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        (line,) = [ln for ln in text.splitlines() if ln.startswith("stem_config_reload_failures")]
        return float(line.split()[-1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("case", sorted(BROKEN_STORES))
def test_reload_to_stores_that_cannot_be_opened_is_refused(project: Project, case: str) -> None:
    key, reason, make_url = BROKEN_STORES[case]
    url = make_url()
    up = Up(project)
    up.run_tasks(0, 5)
    workers = children(up.proc.pid)

    up.save(with_store(up.text, key, url), "reload refused")

    assert reason in up.logs
    assert children(up.proc.pid) == workers, "the refused reload touched the running workers"
    up.run_tasks(5, 20)
    assert children(up.proc.pid) == workers
    assert up.reload_failures() == 1
    assert "restarted" not in up.logs
    assert sorted(int(n) for n in project.ledger_lines()) == list(range(25))
    up.stop()


def test_reload_with_a_handler_that_does_not_import_is_refused_until_fixed(
    project: Project,
) -> None:
    up = Up(project)
    workers = children(up.proc.pid)
    added = up.text.replace(
        "tasks:\n", 'tasks:\n  report: {handler: "reportmod:build", queue: default}\n'
    )

    up.save(added, "reload refused")

    assert "tasks.report.handler: handler 'reportmod:build': cannot import module" in up.logs
    assert children(up.proc.pid) == workers
    up.run_tasks(0, 10)
    assert children(up.proc.pid) == workers

    # Once the module exists, the same file is accepted on the next save.
    (project.root / "reportmod.py").write_text("def build() -> str:\n    return 'built'\n")
    (project.root / "good.yaml").write_text(added)
    up.save(added + "\n", "worker main#0 restarted (tasks changed)")
    # Until the old worker has drained it may still take a delivery it knows no task for.
    wait_until(lambda: "drained, exit code 0" in up.logs, 30, "no handover:\n" + up.logs)
    up.run_tasks(0, 1, task="report")
    assert up.reload_failures() == 1
    up.stop()
