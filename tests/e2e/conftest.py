"""Run `stemrun` as a user does: a subprocess in a project directory with its own stem.yaml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STEMRUN = str(Path(sys.executable).parent / "stemrun")

TASKS_MODULE = '''
import os
import time

from stemrun import SoftTimeLimitExceeded, TaskContext

LEDGER = os.environ.get("E2E_LEDGER", "ledger.txt")


def record(n: int, sleep: float = 0.0) -> int:
    """Sleep, then append n to the side-effect ledger (one line per run)."""
    time.sleep(sleep)
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{n}\\n")
    return n


def flaky(ctx: TaskContext) -> str:
    """Fails until the file `fixed` exists next to the ledger."""
    with open(LEDGER, "a") as ledger:
        ledger.write(f"flaky attempt {ctx.attempt}\\n")
    if not os.path.exists(os.path.join(os.path.dirname(LEDGER) or ".", "fixed")):
        raise ConnectionError("downstream still broken")
    return "fixed"


def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def careful(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        with open(LEDGER, "a") as ledger:
            ledger.write("cleanup ran\\n")
        raise
    return "finished"
'''

STEM_YAML = """
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  record: {handler: "e2etasks:record", visibility_timeout: 3s}
  flaky:
    handler: "e2etasks:flaky"
    max_retries: 2
    retry_backoff: {initial: 50ms, max: 100ms, factor: 1, jitter: false}
  sleepy:
    handler: "e2etasks:sleepy"
    hard_time_limit: 1s
    max_retries: 1
    retry_backoff: {initial: 10ms, jitter: false}
  careful:
    handler: "e2etasks:careful"
    soft_time_limit: 500ms
    hard_time_limit: 5s
    max_retries: 0
workers:
  default:
    queues: [default]
    concurrency: 2
"""


@dataclass
class Project:
    """A directory with a stem.yaml and task module, and the processes started in it."""

    root: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.txt"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
        env["E2E_LEDGER"] = str(self.ledger)
        return env

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one stemrun command to completion."""
        return subprocess.run(
            [STEMRUN, *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def run_json(self, *args: str, timeout: float = 60) -> Any:
        done = self.run(*args, timeout=timeout)
        assert done.stdout.strip(), f"no output from {args}: {done.stderr}"
        return json.loads(done.stdout)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a long-running stemrun command (a worker) in the background."""
        log = open(self.root / f"proc-{len(self.processes)}.log", "wb")
        proc = subprocess.Popen(
            [STEMRUN, *args],
            cwd=self.root,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_until(predicate: Any, timeout: float, message: str) -> None:
    """Poll `predicate` until true; fail the test with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A fresh project directory with the e2e stem.yaml and task module."""
    (tmp_path / "e2etasks.py").write_text(TASKS_MODULE)
    (tmp_path / "stem.yaml").write_text(textwrap.dedent(STEM_YAML))
    proj = Project(root=tmp_path)
    yield proj
    proj.stop_all()
