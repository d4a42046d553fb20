"""examples/monolith_service as its README runs it: one process serving HTTP with an embedded
worker and beat on SQLite. The example is copied to a temporary directory first so its SQLite
file never lands in the repository."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import STEMRUN, wait_until

httpx = pytest.importorskip("httpx", reason="the test extra is not installed")
for _module in ("starlette", "uvicorn"):
    pytest.importorskip(
        _module, reason="the examples extra is not installed (pip install -e '.[examples]')"
    )

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "monolith_service"


@dataclass(frozen=True)
class Service:
    """The running app: its base URL, directory and log."""

    url: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    """A port nothing listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until `process` listens on `port`; fail with its log if it exits or never does."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after 20s:\n{log.read_text()}")


def clean_env() -> dict[str, str]:
    """The environment without STEM_* settings of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """`python examples/monolith_service/app.py --port N`, as the README says, on a copy."""
    root = tmp_path / "monolith_service"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".stem", "__pycache__"))
    port, log = free_port(), tmp_path / "app.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(root / "app.py"), "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for_port(process, port, log)
        yield Service(url=f"http://127.0.0.1:{port}", root=root, process=process, log=log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_terminal(client: Any, task_id: str, timeout: float = 20) -> dict[str, Any]:
    """GET /tasks/{id} until the record is terminal; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        if record["state"] in ("succeeded", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, f"{task_id} still {record['state']}"
        time.sleep(0.05)


def test_monolith_runs_tasks_groups_and_chords_in_process(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        accepted = client.post("/tasks", json={"task": "math.add", "args": {"x": 2, "y": 3}})
        assert accepted.status_code == 202, accepted.text
        record = wait_terminal(client, accepted.json()["id"])
        assert (record["state"], record["result"]) == ("succeeded", 5)

        words = [{"task": "text.word_count", "args": {"text": t}} for t in ("a b c", "d e")]
        group = client.post("/groups", json={"tasks": words})
        chord = client.post("/groups", json={"tasks": words, "callback": {"task": "text.total"}})
        assert (group.status_code, chord.status_code) == (202, 202), chord.text
        finished_group = wait_terminal(client, group.json()["id"])
        assert finished_group["state"] == "succeeded", finished_group
        assert (finished_group["result"], finished_group["completed"]) == ([3, 2], 2)
        finished_chord = wait_terminal(client, chord.json()["id"])
        assert (finished_chord["state"], finished_chord["result"]) == ("succeeded", 5)


def test_monolith_rejects_bad_requests_and_unknown_ids(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        missing = client.get("/tasks/never-enqueued")
        assert (missing.status_code, missing.json()["state"]) == (404, "unknown")
        undeclared = client.post("/tasks", json={"task": "no.such.task"})
        assert undeclared.status_code == 400
        assert "not declared" in undeclared.json()["error"]
        assert client.post("/tasks", content=b"not json").status_code == 400
        assert client.post("/groups", json={"tasks": "math.add"}).status_code == 400


def test_monolith_beat_fires_and_shutdown_drains_running_tasks(service: Service) -> None:
    config = str(service.root / "stem.yaml")

    def stemrun_json(*args: str) -> Any:
        done = subprocess.run(
            [STEMRUN, *args, "--json", "-C", config],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
        )
        return json.loads(done.stdout or "null")

    def fired() -> bool:
        entries = stemrun_json("schedule", "list") or []
        return any(e["name"] == "housekeeping" and e["total_run_count"] >= 1 for e in entries)

    # An `every:` entry fires as soon as the embedded beat applies it.
    wait_until(fired, 20, "the in-process beat never fired the housekeeping schedule")
    with httpx.Client(base_url=service.url, timeout=10) as client:
        slow = client.post(
            "/tasks", json={"task": "report.generate", "args": {"region": "eu", "rows": 10}}
        )
        task_id = slow.json()["id"]
        wait_until(
            lambda: client.get(f"/tasks/{task_id}").json()["state"] == "running",
            20,
            "the report never started",
        )
    service.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its lifespan shutdown has finished.
    assert service.process.wait(timeout=40) in (0, -signal.SIGTERM), service.log.read_text()
    assert "Application shutdown complete" in service.log.read_text()
    # The worker drained: the task running at SIGTERM finished before the process exited.
    record = stemrun_json("status", task_id)
    assert (record["state"], record["result"]) == ("succeeded", {"region": "eu", "rows": 10})
