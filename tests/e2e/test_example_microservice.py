"""examples/microservice as its README runs it, through `run.sh`: certificates from the script,
a TLS-only redis-server requiring client certificates, a signing key from `stemrun keys
generate`, the worker, and the enqueue API over HTTPS with mutual TLS. Everything lives in
tmp_path, on free loopback ports, under a fresh namespace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stemrun.signing import generate_hmac_secret
from tests import services
from tests.e2e.conftest import STEMRUN
from tests.e2e.test_example_monolith import clean_env, free_port, wait_for_port

httpx = pytest.importorskip("httpx", reason="the test extra is not installed")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microservice"


@dataclass
class Deployment:
    """The example's settings for this test and the processes `run.sh` started."""

    state: Path
    redis_port: int
    api_port: int
    namespace: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    def env(self) -> dict[str, str]:
        return {
            **clean_env(),
            "STATE_DIR": str(self.state),
            "REDIS_TLS_PORT": str(self.redis_port),
            "API_PORT": str(self.api_port),
            "ORDERS_NAMESPACE": self.namespace,
            "PYTHON": sys.executable,
        }

    def run(self, step: str) -> str:
        """`run.sh STEP` to completion; returns its output."""
        done = subprocess.run(
            ["bash", str(EXAMPLE / "run.sh"), step],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"run.sh {step}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self, step: str, port: int | None = None) -> None:
        """`run.sh STEP` in the background; waits for `port` to listen when given."""
        log = self.state / f"{step}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", str(EXAMPLE / "run.sh"), step],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes.append(process)
        if port is not None:
            wait_for_port(process, port, log)

    def client(self, *, with_certificate: bool = True) -> Any:
        """An HTTPS client trusting the example's CA, presenting its client certificate."""
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        if with_certificate:
            context.load_cert_chain(self.certs / "client.crt", self.certs / "client.key")
        return httpx.Client(base_url=f"https://localhost:{self.api_port}", verify=context)

    def redis(self) -> Any:
        """A direct client of the TLS Redis, to look at what travels through it."""
        import redis

        return redis.Redis(
            host="localhost",
            port=self.redis_port,
            ssl=True,
            ssl_ca_certs=str(self.certs / "ca.crt"),
            ssl_certfile=str(self.certs / "client.crt"),
            ssl_keyfile=str(self.certs / "client.key"),
        )

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """Certificates and a signing key made by `run.sh`, and its TLS-only redis-server running."""
    for tool in ("redis-server", "openssl"):
        if shutil.which(tool) is None:
            services._absent(tool, "PATH", "not installed")
    found = Deployment(
        state=tmp_path / "state",
        redis_port=free_port(),
        api_port=free_port(),
        namespace=services.unique_namespace("ms"),
    )
    try:
        found.run("certs")
        found.run("keys")
        found.start("redis", found.redis_port)
        yield found
    finally:
        found.stop_all()


def signing_env(state: Path) -> dict[str, str]:
    """The STEM_SIGNING_* variables `run.sh keys` wrote."""
    lines = (state / "signing.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def wait_terminal(client: Any, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """GET /tasks/{id} until the record is terminal; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        if record["state"] in ("succeeded", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, f"{task_id} still {record['state']}"
        time.sleep(0.05)


def test_signed_tasks_over_mutual_tls_end_to_end(deployment: Deployment) -> None:
    keys = signing_env(deployment.state)
    assert stat.S_IMODE((deployment.state / "signing.env").stat().st_mode) == 0o600
    deployment.start("api", deployment.api_port)
    order = {"task": "orders.confirm", "args": {"order_id": "A1", "amount": 9.5}}
    with deployment.client() as client:
        accepted = client.post("/tasks", json=order)
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["id"]

        # No worker yet: the envelope waits in Redis, signed with the generated key.
        with deployment.redis() as store:
            entries = store.xrange(f"{deployment.namespace}:stream:default:0")
        envelope = json.loads(entries[0][1][b"body"])
        assert envelope["kid"] == keys["STEM_SIGNING_ACTIVE_KEY"] and envelope["sig"]

        deployment.start("worker")
        record = wait_terminal(client, task_id)
        assert record["state"] == "succeeded", record
        assert record["result"]["confirmed"] is True
        email = wait_terminal(client, record["result"]["email_task"])
        assert (email["state"], email["queue"]) == ("succeeded", "emails")
        assert client.get("/tasks/never-enqueued").status_code == 404


def test_api_refuses_clients_without_a_certificate(deployment: Deployment) -> None:
    deployment.start("api", deployment.api_port)
    with deployment.client(with_certificate=False) as client:
        with pytest.raises(httpx.TransportError):
            client.post("/tasks", json={"task": "orders.confirm", "args": {}})
    with deployment.client() as client:
        assert client.get("/tasks/never-enqueued").status_code == 404


def test_worker_rejects_tasks_signed_with_another_key(deployment: Deployment) -> None:
    deployment.start("api", deployment.api_port)
    deployment.start("worker")
    # A producer that reaches Redis (it has a client certificate) but not the signing key.
    intruder = {
        **deployment.env(),
        "STEM_SIGNING_KEYS": f"intruder:{generate_hmac_secret()}",
        "STEM_SIGNING_ACTIVE_KEY": "intruder",
        "CERTS_DIR": str(deployment.certs),
    }
    args = '{"order_id": "X", "amount": 1}'
    forged = subprocess.run(
        [STEMRUN, "enqueue", "orders.confirm", "--args", args, "-C", str(EXAMPLE / "stem.yaml")],
        env=intruder,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert forged.returncode == 0, forged.stderr
    task_id = forged.stdout.strip()
    show = [STEMRUN, "dlq", "show", task_id, "--json", "-C", str(EXAMPLE / "stem.yaml")]
    deadline = time.monotonic() + 30
    while (dead := subprocess.run(show, env=intruder, capture_output=True, text=True)).returncode:
        assert time.monotonic() < deadline, f"{task_id} never dead-lettered: {dead.stderr}"
        time.sleep(0.1)
    entry = json.loads(dead.stdout)
    assert (entry["reason"], entry["error"]["type"]) == ("signature-invalid", "SignatureInvalid")
    # Nothing vouched for the forged message's id, so its status was left alone: never run.
    with deployment.client() as client:
        assert client.get(f"/tasks/{task_id}").json()["state"] == "queued"
