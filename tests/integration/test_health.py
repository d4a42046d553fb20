"""Health checks against real stores: SQLite files, the local Redis, and failing stores."""

from __future__ import annotations

import importlib.util
import ssl
import threading
from pathlib import Path

import pytest

from stemrun import health
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.errors import BrokerUnavailable, UsageError

REDIS_STORES = all(
    importlib.util.find_spec(m) for m in ("stemrun.brokers.redis_streams", "stemrun.backends.redis")
)


def _config(tmp_path: Path, **stores: str) -> Config:
    return config_from_mapping({"version": 1, **stores}, root_dir=tmp_path, env={})


def test_sqlite_stores_are_healthy_and_reported_per_role(tmp_path: Path) -> None:
    config = _config(tmp_path)
    report = health.check(config, health.targets(config))
    assert report.healthy
    assert [c.role for c in report.checks] == ["broker", "result_backend", "schedule_store"]
    assert {c.url for c in report.checks} == {f"sqlite:///{tmp_path}/.stem/stem.db"}
    assert all(c.ok and c.error is None and c.latency_ms >= 0 for c in report.checks)


def test_a_url_shared_by_several_roles_is_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, schedule_store="sqlite:///beat.db")
    pinged: list[tuple[str, str]] = []
    real = health.ping_store
    monkeypatch.setattr(
        health, "ping_store", lambda c, role, url: (pinged.append((role, url)), real(c, role, url))
    )
    report = health.check(config, health.targets(config))
    assert report.healthy
    assert sorted(role for role, _ in pinged) == ["broker", "schedule_store"]
    assert report.checks[2].url.endswith("/beat.db")


def test_an_unusable_sqlite_path_fails_only_its_role(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    config = _config(tmp_path, result_backend="sqlite:///not-a-dir/results.db")
    report = health.check(config, health.targets(config))
    assert not report.healthy
    by_role = {c.role: c for c in report.checks}
    assert by_role["broker"].ok
    assert not by_role["result_backend"].ok and not by_role["schedule_store"].ok
    assert "not-a-dir/results.db" in (by_role["result_backend"].error or "")


def test_overrides_replace_only_their_role(tmp_path: Path) -> None:
    config = _config(tmp_path)
    items = health.targets(config, broker="memory://a", backend="memory://b")
    assert [(t.role, t.url) for t in items] == [
        ("broker", "memory://a"),
        ("result_backend", "memory://b"),
        ("schedule_store", config.schedule_store),
    ]


def test_an_unknown_scheme_is_a_usage_error_naming_the_masked_url(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"broker foo://u:\*\*\*@h/0: unknown URL scheme 'foo'"):
        health.targets(_config(tmp_path), broker="foo://u:pw@h/0")


def test_a_store_that_does_not_answer_fails_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setattr(health, "ping_store", lambda *_: release.wait(10))
    config = _config(tmp_path)
    try:
        report = health.check(config, health.targets(config), timeout_s=0.2)
    finally:
        release.set()
    assert not report.healthy
    assert {c.error for c in report.checks} == {"no answer within 0.2s"}
    assert all(c.latency_ms >= 200 for c in report.checks)


def test_a_tls_failure_is_reported_with_the_handshake_diagnostics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_config: Config, _role: str, url: str) -> None:
        try:
            raise ssl.SSLError(
                1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] cert required (_ssl.c:2580)"
            )
        except ssl.SSLError as exc:
            raise BrokerUnavailable(f"broker {url}: unreachable") from exc

    monkeypatch.setattr(health, "ping_store", refuse)
    config = config_from_mapping(
        {"version": 1, "tls": {"ca_cert": "certs/ca.crt"}}, root_dir=tmp_path, env={}
    )
    items = health.targets(config, broker="rediss://:pw@cache.internal/0")
    broker = health.check(config, items).checks[0]
    assert broker.tls_failure and not broker.ok
    assert broker.error == (
        "TLS handshake with broker at cache.internal:6379 failed: cert required "
        f"(CA: {tmp_path}/certs/ca.crt; client cert: not provided); "
        "set STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"
    )


@pytest.mark.skipif(not REDIS_STORES, reason="the Redis stores are not in yet")
def test_the_local_redis_is_healthy(tmp_path: Path, redis_url: str, redis_namespace: str) -> None:
    config = config_from_mapping(
        {"version": 1, "broker": redis_url, "namespace": redis_namespace},
        root_dir=tmp_path,
        env={},
    )
    report = health.check(config, health.targets(config))
    assert report.healthy, report.to_dict()


@pytest.mark.skipif(not REDIS_STORES, reason="the Redis stores are not in yet")
def test_nothing_listening_is_unhealthy_fast(tmp_path: Path) -> None:
    config = _config(tmp_path)
    report = health.check(config, health.targets(config, broker="redis://127.0.0.1:1/0"))
    broker = report.checks[0]
    assert not broker.ok and not broker.tls_failure
    assert broker.latency_ms < health.DEFAULT_TIMEOUT_S * 1000


def test_postgres_backend_is_healthy(tmp_path: Path, postgres_url: str) -> None:
    config = _config(tmp_path, result_backend=postgres_url)
    report = health.check(config, health.targets(config))
    assert report.healthy, report.to_dict()
    assert report.checks[1].url == postgres_url


def test_postgres_tls_failure_shows_the_diagnostics(tmp_path: Path, postgres_url: str) -> None:
    # The tls section asks for verify-full against a CA that signed nothing the server has (or
    # the server has no TLS at all): either way the handshake cannot succeed.
    config = config_from_mapping(
        {"version": 1, "result_backend": postgres_url, "tls": {"ca_cert": "nowhere/ca.crt"}},
        root_dir=tmp_path,
        env={},
    )
    backend = health.check(config, health.targets(config)).checks[1]
    assert not backend.ok and backend.tls_failure
    assert "TLS handshake with result backend at 127.0.0.1:5432 failed: " in (backend.error or "")
    assert f"(CA: {tmp_path}/nowhere/ca.crt; client cert: not provided)" in (backend.error or "")
