"""Postgres connection settings and failures: the tls section, unreachable servers, bad URLs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stemrun.backends.postgres import PostgresBackend
from stemrun.config.model import TlsConfig
from stemrun.errors import BackendError, BackendUnavailable, BrokerUnavailable
from stemrun.stores import open_broker
from tests import services

MUTUAL = TlsConfig(
    ca_cert=Path("/certs/ca.crt"),
    client_cert=Path("/certs/client.crt"),
    client_key=Path("/certs/client.key"),
)


def _connect_kwargs(monkeypatch: pytest.MonkeyPatch, url: str, tls: TlsConfig) -> dict[str, Any]:
    """What the backend passes to psycopg.connect on its first query."""
    seen: dict[str, Any] = {}

    def fake_connect(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, args=args)
        raise psycopg.OperationalError("stop here")

    monkeypatch.setattr(psycopg, "connect", fake_connect)
    with pytest.raises(BackendUnavailable):
        PostgresBackend(url, tls=tls).ping()
    return seen


def test_tls_section_sets_verify_full_with_ca_and_client_cert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://app:pw@db.internal:6543/jobs?options=-csearch_path%3Dapp&sslmode=disable"
    kwargs = _connect_kwargs(monkeypatch, url, MUTUAL)
    assert kwargs["sslmode"] == "verify-full", "the tls section wins over the URL's sslmode"
    assert (kwargs["sslrootcert"], kwargs["sslcert"], kwargs["sslkey"]) == (
        "/certs/ca.crt",
        "/certs/client.crt",
        "/certs/client.key",
    )
    assert (kwargs["host"], kwargs["port"], kwargs["dbname"], kwargs["user"]) == (
        "db.internal",
        "6543",
        "jobs",
        "app",
    )
    assert kwargs["options"] == "-csearch_path=app"
    assert int(kwargs["connect_timeout"]) > 0


def test_tls_without_ca_verifies_against_the_system_store(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = _connect_kwargs(monkeypatch, "postgresql://db.internal/jobs", TlsConfig())
    assert (kwargs["sslmode"], kwargs["sslrootcert"]) == ("verify-full", "system")
    assert "sslcert" not in kwargs


def test_allow_insecure_requires_tls_without_verifying(monkeypatch: pytest.MonkeyPatch) -> None:
    tls = TlsConfig(ca_cert=Path("/certs/ca.crt"), allow_insecure=True)
    kwargs = _connect_kwargs(monkeypatch, "postgresql://db.internal/jobs", tls)
    assert kwargs["sslmode"] == "require"
    assert "sslrootcert" not in kwargs


def test_verify_full_against_a_server_without_tls_fails_with_the_handshake_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = services.require_postgres()
    url = base.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    tls = TlsConfig(ca_cert=Path("/certs/ca.crt"))
    caplog.set_level(logging.WARNING, logger="stemrun.tls")
    for _ in range(2):
        backend = PostgresBackend(url, tls=tls)
        with pytest.raises(BackendUnavailable) as caught:
            backend.get("a")
        message = str(caught.value)
        assert "result backend postgresql://postgres:***@127.0.0.1:5432/test" in message
        assert "s3cret" not in message
        assert "TLS handshake with result backend at 127.0.0.1:5432 failed" in message
        assert "CA: /certs/ca.crt; client cert: not provided" in message
        assert "STEM_TLS_ALLOW_INSECURE=true" in message
    warnings = [r for r in caplog.records if r.name == "stemrun.tls"]
    assert len(warnings) == 1, "the handshake warning is logged once per process"
    assert "s3cret" not in warnings[0].getMessage()


def test_unreachable_server_names_the_masked_url() -> None:
    backend = PostgresBackend("postgresql://postgres:hunter2@127.0.0.1:1/test")
    with pytest.raises(BackendUnavailable) as caught:
        backend.ping()
    message = str(caught.value)
    assert message.startswith("result backend postgresql://postgres:***@127.0.0.1:1/test: ")
    assert "cannot connect" in message and "hunter2" not in message


def test_wrong_database_name_names_the_masked_url() -> None:
    base = services.require_postgres()
    url = base.rsplit("/", 1)[0].replace("postgres@", "postgres:pw@") + "/no_such_db_stemrun"
    with pytest.raises(BackendUnavailable) as caught:
        PostgresBackend(url).get("a")
    message = str(caught.value)
    assert "postgresql://postgres:***@127.0.0.1:5432/no_such_db_stemrun" in message
    assert 'database "no_such_db_stemrun" does not exist' in message


def test_a_malformed_url_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="not a valid Postgres URL"):
        PostgresBackend("postgresql://postgres@127.0.0.1:5432/test?nonsense_option=1")


def test_open_broker_on_an_unreachable_postgres_names_the_masked_url() -> None:
    broker = open_broker("postgresql://stem:hunter2@127.0.0.1:1/jobs")
    with pytest.raises(BrokerUnavailable) as caught:
        broker.ping()
    message = str(caught.value)
    assert message.startswith("broker postgresql://stem:***@127.0.0.1:1/jobs: cannot connect")
    assert "hunter2" not in message
