"""Mutual TLS with Redis end to end: certificates from the script, a TLS-only redis-server.

The server requires client certificates (`--tls-auth-clients yes`), so a client without one is
refused, a client trusting another CA refuses the server, and `allow_insecure` gets through the
wrong-CA case. Every failure must show the docs/tls.md handshake warning.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stemrun.config.model import TlsConfig
from stemrun.tls import redis_kwargs, tls_failure_reason
from tests import services
from tests.e2e.conftest import STEMRUN, Project

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "security" / "generate_tls_assets.sh"
HINT = "set STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"

needs_stores = pytest.mark.skipif(
    not all(
        importlib.util.find_spec(m)
        for m in ("stemrun.brokers.redis_streams", "stemrun.backends.redis")
    ),
    reason="the Redis stores are not in yet",
)


@dataclass(frozen=True)
class TlsRedis:
    """A TLS-only redis-server started for this module, and the assets it trusts."""

    port: int
    certs: Path  # ca.crt, server.*, client.* signed by the server's CA
    other_ca: Path  # ca.crt of an unrelated CA


def _generate(out: Path) -> Path:
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out), "localhost,127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"redis-server did not listen on {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """Certificates, a second CA, and a mutual-TLS redis-server on a free port (stopped after)."""
    for tool in ("redis-server", "openssl"):
        if shutil.which(tool) is None:
            services._absent(tool, "PATH", "not installed")
    base = tmp_path_factory.mktemp("tls")
    certs, other = _generate(base / "certs"), _generate(base / "other")
    port, log = _free_port(), base / "redis.log"
    args = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += [
        "--tls-cert-file",
        str(certs / "server.crt"),
        "--tls-key-file",
        str(certs / "server.key"),
    ]
    args += ["--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "yes"]
    args += ["--save", "", "--appendonly", "no", "--logfile", str(log), "--dir", str(base)]
    proc = subprocess.Popen(["redis-server", *args], stdin=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port, log)
        yield TlsRedis(port=port, certs=certs, other_ca=other / "ca.crt")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _configure(project: Project, server: TlsRedis, **tls: Any) -> None:
    """stem.yaml pointing at the TLS server with the given tls section, in a fresh namespace."""
    section = "\n".join(f"  {key}: {yaml_scalar(value)}" for key, value in tls.items())
    (project.root / "stem.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            broker: rediss://localhost:{server.port}/0
            namespace: {services.unique_namespace()}
            queues:
              default: {{}}
            tasks:
              record: {{handler: "e2etasks:record"}}
            workers:
              default: {{queues: [default], concurrency: 1, pool: thread}}
            """
        )
        + f"tls:\n{section}\n"
    )


def yaml_scalar(value: Any) -> str:
    """A YAML scalar for a path or a bool."""
    return "true" if value is True else "false" if value is False else f'"{value}"'


def _mutual(server: TlsRedis) -> dict[str, Any]:
    return {
        "ca_cert": server.certs / "ca.crt",
        "client_cert": server.certs / "client.crt",
        "client_key": server.certs / "client.key",
    }


def _tls_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "stemrun.tls" in line]


@needs_stores
def test_enqueue_worker_and_result_over_mutual_tls(project: Project, tls_redis: TlsRedis) -> None:
    _configure(project, tls_redis, **_mutual(tls_redis))
    healthy = project.run("health")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"rediss://localhost:{tls_redis.port}/0" in healthy.stdout
    project.start("worker")
    done = project.run("enqueue", "record", "--args", '{"n": 7}', "--wait", "--timeout", "60s")
    assert done.returncode == 0, done.stdout + done.stderr + project.logs()
    status = json.loads(done.stdout)
    assert (status["state"], status["result"]) == ("succeeded", 7)
    assert project.ledger_lines() == ["7"]


@needs_stores
def test_a_client_without_certificate_is_refused_with_the_warning(
    project: Project, tls_redis: TlsRedis
) -> None:
    _configure(project, tls_redis, ca_cert=tls_redis.certs / "ca.crt")
    done = project.run("enqueue", "record", "--args", '{"n": 1}')
    assert done.returncode == 1
    warnings = _tls_warnings(done.stderr)
    assert len(warnings) == 1, done.stderr
    # The component is whichever store connected first (broker or result backend: one URL).
    assert re.search(rf"TLS handshake with .+ at localhost:{tls_redis.port} failed: ", warnings[0])
    assert f"(CA: {tls_redis.certs / 'ca.crt'}; client cert: not provided); {HINT}" in warnings[0]
    # A generous deadline: the refusal surfaces only after the Redis client's retries.
    probe = project.run("health", "--json", "--timeout", "20s")
    assert probe.returncode == 1
    broker = json.loads(probe.stdout)["checks"][0]
    assert broker["tls_failure"] is True
    assert f"at localhost:{tls_redis.port} failed: " in broker["error"]
    assert broker["error"].endswith(f"client cert: not provided); {HINT}")


@needs_stores
def test_a_wrong_ca_fails_and_health_names_host_port_and_cert_paths(
    project: Project, tls_redis: TlsRedis
) -> None:
    _configure(project, tls_redis, **{**_mutual(tls_redis), "ca_cert": tls_redis.other_ca})
    enqueue = project.run("enqueue", "record", "--args", '{"n": 1}')
    assert enqueue.returncode == 1
    assert len(_tls_warnings(enqueue.stderr)) == 1, enqueue.stderr
    done = project.run("health")
    assert done.returncode == 1
    broker = next(line for line in done.stdout.splitlines() if line.startswith("broker "))
    assert " FAILED " in broker
    assert re.search(
        rf"TLS handshake with .+ at localhost:{tls_redis.port} failed: certificate verify failed",
        broker,
    )
    assert f"(CA: {tls_redis.other_ca}; client cert: {tls_redis.certs / 'client.crt'}); " in broker
    assert broker.endswith(HINT)


@needs_stores
def test_allow_insecure_gets_through_a_wrong_ca(project: Project, tls_redis: TlsRedis) -> None:
    wrong = {**_mutual(tls_redis), "ca_cert": tls_redis.other_ca}
    _configure(project, tls_redis, **wrong, allow_insecure=True)
    done = project.run("health", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    _configure(project, tls_redis, **wrong)
    by_env = subprocess.run(
        [STEMRUN, "health"],
        cwd=project.root,
        env={**project.env(), "STEM_TLS_ALLOW_INSECURE": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr


# -- the client settings of stemrun.tls against the real server, without the stores ------------


def _ping(server: TlsRedis, tls: TlsConfig) -> None:
    import redis

    url = f"rediss://localhost:{server.port}/0"
    client = redis.Redis.from_url(url, socket_timeout=5, **redis_kwargs(tls))
    try:
        assert client.ping()
    finally:
        client.close()


def _reason(server: TlsRedis, tls: TlsConfig) -> str | None:
    import redis

    with pytest.raises(redis.ConnectionError) as caught:
        _ping(server, tls)
    return tls_failure_reason(caught.value)


def test_redis_kwargs_speak_mutual_tls(tls_redis: TlsRedis) -> None:
    _ping(tls_redis, TlsConfig(**_mutual(tls_redis)))


def test_redis_kwargs_without_client_cert_are_refused_by_the_server(tls_redis: TlsRedis) -> None:
    reason = _reason(tls_redis, TlsConfig(ca_cert=tls_redis.certs / "ca.crt"))
    # TLS 1.3: the refusal arrives as an alert, or as a bare close when the alert is lost.
    assert reason is not None
    assert "certificate required" in reason or "closed the connection" in reason


def test_redis_kwargs_with_another_ca_refuse_the_server(tls_redis: TlsRedis) -> None:
    reason = _reason(tls_redis, TlsConfig(**{**_mutual(tls_redis), "ca_cert": tls_redis.other_ca}))
    assert reason is not None and reason.startswith("certificate verify failed: ")


def test_redis_kwargs_allow_insecure_skip_verification(tls_redis: TlsRedis) -> None:
    wrong = {**_mutual(tls_redis), "ca_cert": tls_redis.other_ca}
    _ping(tls_redis, TlsConfig(**wrong, allow_insecure=True))
