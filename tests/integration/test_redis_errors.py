"""Bad Redis URLs, unreachable servers, wrong passwords and TLS failures: clear stemrun errors."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stemrun.errors import BackendError, BackendUnavailable, BrokerError, BrokerUnavailable
from stemrun.stores import open_backend, open_broker
from tests.integration.test_redis_reconnect import RedisServer, free_port, redis_server

__all__ = ["redis_server"]  # the fixture, imported for this module's tests

ROLES: list[tuple[Callable[..., Any], str, type[Exception], type[Exception]]] = [
    (open_broker, "broker", BrokerError, BrokerUnavailable),
    (open_backend, "result backend", BackendError, BackendUnavailable),
]
ROLE_IDS = ["broker", "backend"]


@pytest.mark.parametrize(("opener", "role", "error", "unavailable"), ROLES, ids=ROLE_IDS)
def test_unreachable_server_names_role_and_masked_url(
    opener: Callable[..., Any], role: str, error: type[Exception], unavailable: type[Exception]
) -> None:
    port = free_port()
    with pytest.raises(unavailable) as caught:
        opener(f"redis://:s3cret@127.0.0.1:{port}/0")
    message = str(caught.value)
    assert f"{role} redis://:***@127.0.0.1:{port}/0: connect: Redis is unreachable" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(("opener", "role", "error", "unavailable"), ROLES, ids=ROLE_IDS)
def test_wrong_password_is_refused_clearly(
    redis_server: RedisServer,
    opener: Callable[..., Any],
    role: str,
    error: type[Exception],
    unavailable: type[Exception],
) -> None:
    redis_server.args = ["--requirepass", "right-one"]
    redis_server.kill()
    redis_server.start()
    url = f"redis://:wrong-one@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(error) as caught:
        opener(url)
    message = str(caught.value)
    where = f"{role} redis://:***@127.0.0.1:{redis_server.port}/0"
    assert f"{where}: connect: authentication failed" in message
    assert "wrong-one" not in message
    assert not isinstance(caught.value, unavailable)
    store = opener(f"redis://:right-one@127.0.0.1:{redis_server.port}/0")
    store.ping()
    store.close()


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/notadb"], ids=["port", "db"]
)
@pytest.mark.parametrize(("opener", "role", "error", "unavailable"), ROLES, ids=ROLE_IDS)
def test_malformed_url(
    url: str,
    opener: Callable[..., Any],
    role: str,
    error: type[Exception],
    unavailable: type[Exception],
) -> None:
    with pytest.raises(error, match=f"{role} .*: invalid Redis URL"):
        opener(url)


@pytest.fixture
def plain_text_port() -> Iterator[int]:
    """A port whose server answers a TLS hello with a plain-text error, as Redis without TLS
    would if it did not wait for a newline (so the handshake fails at once, not by timeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"-ERR unknown command\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()


def test_tls_handshake_failure_warns_once_per_component(
    plain_text_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"rediss://127.0.0.1:{plain_text_port}/0"
    caplog.set_level(logging.WARNING, logger="stemrun.tls")
    for _ in range(2):
        with pytest.raises(BrokerUnavailable) as caught:
            open_broker(url)
    with pytest.raises(BackendUnavailable):
        open_backend(url)
    warnings = [r.getMessage() for r in caplog.records if r.name == "stemrun.tls"]
    where = f"127.0.0.1:{plain_text_port}"
    assert [w.split(" failed")[0] for w in warnings] == [
        f"TLS handshake with broker at {where}",
        f"TLS handshake with result backend at {where}",
    ]
    assert str(caught.value) == warnings[0]
    assert "(CA: system; client cert: not provided)" in warnings[0]
    assert warnings[0].endswith("STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily")
