"""A private redis-server killed and restarted: the Redis stores reconnect by themselves.

`RedisServer` is also used by the Redis e2e tests (restart under load, wrong password).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from stemrun.backends.record import StatusRecord
from stemrun.backends.redis import RedisBackend
from stemrun.brokers.base import Message
from stemrun.brokers.redis_streams import RedisStreamsBroker
from stemrun.errors import BrokerUnavailable
from stemrun.state import TaskState


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server of our own on a free port, for tests that kill or configure it."""

    dir: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.dir), "--save", "", *self.args]
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(dir=tmp_path)
    server.start()
    yield server
    server.kill()


def test_stores_resume_after_a_restart_without_persistence(redis_server: RedisServer) -> None:
    broker = RedisStreamsBroker(redis_server.url, namespace="r")
    backend = RedisBackend(redis_server.url, namespace="r")
    try:
        broker.publish([Message(id="a", queue="q", body=b"a")])
        assert broker.ack(broker.fetch(["q"], 1, consumer="c", lease_s=30)) == [True]
        redis_server.kill()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=f"broker {redis_server.url}: fetch"):
            broker.fetch(["q"], 1, consumer="c", lease_s=30)
        assert time.monotonic() - started < 5, "a dead server must fail fast, not hang"
        redis_server.start()  # empty: streams, groups and scripts are gone
        broker.publish([Message(id="b", queue="q", body=b"b")])
        [again] = broker.fetch(["q"], 1, consumer="c", lease_s=30)
        assert (again.id, again.deliveries) == ("b", 1)
        record = StatusRecord(id="b", task="t", state=TaskState.QUEUED, queue="q")
        assert backend.create([record]) == [True]
        assert backend.get("b") == record
    finally:
        broker.close()
        backend.close()


def test_leases_survive_a_restart_with_persistence(redis_server: RedisServer) -> None:
    redis_server.args = ["--appendonly", "yes"]
    redis_server.kill()
    redis_server.start()
    broker = RedisStreamsBroker(redis_server.url, namespace="r")
    try:
        broker.publish([Message(id=n, queue="q", body=n.encode()) for n in ("a", "b")])
        [held] = broker.fetch(["q"], 1, consumer="c", lease_s=30)
        redis_server.kill()
        redis_server.start()
        [other] = broker.fetch(["q"], 5, consumer="c2", lease_s=30)
        assert (held.id, other.id) == ("a", "b")
        assert broker.ack([held, other]) == [True, True]
        assert broker.fetch(["q"], 5, consumer="c", lease_s=30) == []
    finally:
        broker.close()


def test_a_destroyed_consumer_group_is_recreated(redis_url: str, redis_namespace: str) -> None:
    broker = RedisStreamsBroker(redis_url, namespace=redis_namespace)
    try:
        broker.publish([Message(id="a", queue="q", body=b"a")])
        broker.ack(broker.fetch(["q"], 1, consumer="c", lease_s=30))
        broker.publish([Message(id="b", queue="q", body=b"b")])
        client = redis.Redis.from_url(redis_url)
        client.xgroup_destroy(f"{redis_namespace}:stream:q:0", "stemrun")
        client.close()
        assert [d.id for d in broker.fetch(["q"], 5, consumer="c", lease_s=30)] == ["b"]
    finally:
        broker.close()
