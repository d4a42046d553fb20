"""The tls section -> client settings, the handshake warning, and the TLS asset script."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemrun.config.model import TlsConfig
from stemrun.tls import (
    handshake_warning,
    log_handshake_failure,
    looks_like_tls_failure,
    postgres_kwargs,
    redis_kwargs,
    ssl_context,
    tls_failure_reason,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "security" / "generate_tls_assets.sh"

FULL = TlsConfig(
    ca_cert=Path("/etc/stem/ca.crt"),
    client_cert=Path("/etc/stem/client.crt"),
    client_key=Path("/etc/stem/client.key"),
)
INSECURE = TlsConfig(
    client_cert=Path("/etc/stem/client.crt"),
    client_key=Path("/etc/stem/client.key"),
    allow_insecure=True,
)


# -- redis_kwargs ---------------------------------------------------------------------------


def test_redis_without_tls_section_verifies_against_system_cas() -> None:
    assert redis_kwargs(None) == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}


def test_redis_with_ca_and_client_cert_uses_them_for_mutual_tls() -> None:
    assert redis_kwargs(FULL) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/etc/stem/ca.crt",
        "ssl_certfile": "/etc/stem/client.crt",
        "ssl_keyfile": "/etc/stem/client.key",
    }


def test_redis_allow_insecure_skips_verification_but_still_presents_the_client_cert() -> None:
    assert redis_kwargs(INSECURE) == {
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
        "ssl_certfile": "/etc/stem/client.crt",
        "ssl_keyfile": "/etc/stem/client.key",
    }


# -- postgres_kwargs ------------------------------------------------------------------------


def test_postgres_without_tls_section_leaves_the_url_sslmode_alone() -> None:
    assert postgres_kwargs(None) == {}


def test_postgres_with_ca_and_client_cert_verifies_fully() -> None:
    assert postgres_kwargs(FULL) == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/stem/ca.crt",
        "sslcert": "/etc/stem/client.crt",
        "sslkey": "/etc/stem/client.key",
    }


def test_postgres_without_ca_verifies_against_the_system_store() -> None:
    assert postgres_kwargs(TlsConfig()) == {"sslmode": "verify-full", "sslrootcert": "system"}


def test_postgres_allow_insecure_downgrades_to_require() -> None:
    assert postgres_kwargs(INSECURE) == {
        "sslmode": "require",
        "sslcert": "/etc/stem/client.crt",
        "sslkey": "/etc/stem/client.key",
    }


# -- ssl_context ----------------------------------------------------------------------------


def test_ssl_context_verifies_by_default_and_not_when_insecure() -> None:
    strict = ssl_context(None)
    assert strict.verify_mode is ssl.CERT_REQUIRED and strict.check_hostname
    loose = ssl_context(TlsConfig(allow_insecure=True))
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname


# -- handshake warning ----------------------------------------------------------------------


def test_handshake_warning_names_everything_a_user_needs() -> None:
    text = handshake_warning("broker", "redis.internal", 6380, FULL, "certificate verify failed")
    assert text == (
        "TLS handshake with broker at redis.internal:6380 failed: certificate verify failed "
        "(CA: /etc/stem/ca.crt; client cert: /etc/stem/client.crt); "
        "set STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"
    )


def test_handshake_warning_without_tls_section_says_system_and_not_provided() -> None:
    text = handshake_warning("result backend", "db", None, None, "boom")
    assert text == (
        "TLS handshake with result backend at db failed: boom "
        "(CA: system; client cert: not provided); "
        "set STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"
    )


def _wrapped(inner: BaseException) -> ConnectionError:
    """A client-library error that keeps the ssl error only as its context, as redis-py does."""
    try:
        try:
            raise inner
        except OSError:
            raise ConnectionError("Error 1 connecting to localhost:6380.") from None
    except ConnectionError as outer:
        outer.__context__ = inner
        return outer


def test_handshake_warning_given_the_exception_shows_openssl_reason() -> None:
    inner = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed")
    inner.verify_message = "self-signed certificate in certificate chain"
    text = handshake_warning("broker", "localhost", 6380, None, _wrapped(inner))
    assert "failed: certificate verify failed: self-signed certificate in certificate chain (" in (
        text
    )


def test_tls_failure_reason_strips_openssl_noise() -> None:
    inner = ssl.SSLError(
        1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:1)"
    )
    assert tls_failure_reason(_wrapped(inner)) == "tlsv13 alert certificate required"
    assert looks_like_tls_failure(_wrapped(inner))


def test_a_server_closing_mid_handshake_is_a_tls_failure_with_a_readable_reason() -> None:
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2406)")
    assert tls_failure_reason(_wrapped(eof)) == (
        "the server closed the connection during the handshake "
        "(EOF occurred in violation of protocol)"
    )


def test_a_refused_connection_is_not_a_tls_failure() -> None:
    refused = _wrapped(ConnectionRefusedError(111, "Connection refused"))
    assert tls_failure_reason(refused) is None
    assert not looks_like_tls_failure(refused)


def test_log_handshake_failure_logs_one_warning_on_stemrun_tls() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    tls_logger = logging.getLogger("stemrun.tls")
    tls_logger.addHandler(handler)
    try:
        text = log_handshake_failure("broker", "localhost", 6380, None, "boom")
    finally:
        tls_logger.removeHandler(handler)
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.WARNING, text)]


# -- scripts/security/generate_tls_assets.sh ------------------------------------------------

ASSETS = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")


def _openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=True)
    return done.stdout


def _generate(out: Path, sans: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), sans], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def assets(tmp_path: Path) -> Iterator[Path]:
    """Assets generated once into tmp_path/certs."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path / "certs"
    done = _generate(out, "localhost,127.0.0.1,redis.internal")
    assert done.returncode == 0, done.stderr
    yield out


def test_script_creates_ca_and_certificates_signed_by_it(assets: Path) -> None:
    assert all((assets / name).is_file() for name in ASSETS)
    verified = _openssl(
        "verify", "-CAfile", str(assets / "ca.crt"), *(str(assets / f) for f in ASSETS[1::2])
    )
    assert verified.count(": OK") == 2


def test_script_puts_dns_names_and_ip_addresses_in_the_server_sans(assets: Path) -> None:
    text = _openssl("x509", "-in", str(assets / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert "DNS:localhost" in text and "DNS:redis.internal" in text
    assert "IP Address:127.0.0.1" in text


def test_script_keys_are_readable_by_the_owner_only(assets: Path) -> None:
    for name in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE(os.stat(assets / name).st_mode) == 0o600, name


def test_script_is_idempotent_and_reissues_only_for_new_sans(assets: Path) -> None:
    before = {name: (assets / name).read_bytes() for name in ASSETS}
    again = _generate(assets, "localhost,127.0.0.1,redis.internal")
    assert again.returncode == 0, again.stderr
    assert {name: (assets / name).read_bytes() for name in ASSETS} == before
    changed = _generate(assets, "localhost,10.0.0.5")
    assert changed.returncode == 0, changed.stderr
    assert (assets / "ca.crt").read_bytes() == before["ca.crt"]
    assert (assets / "server.crt").read_bytes() != before["server.crt"]
    text = _openssl("x509", "-in", str(assets / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert "IP Address:10.0.0.5" in text


@pytest.mark.parametrize("args", [[], ["only-dir"], ["dir", "a,b", "extra"], ["dir", "bad name"]])
def test_script_bad_arguments_print_usage_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path, timeout=30
    )
    assert done.returncode == 2
    assert "usage: generate_tls_assets.sh OUT_DIR SAN[,SAN...]" in done.stderr
    assert not (tmp_path / "dir").exists()


def test_the_warning_says_when_verification_is_already_off() -> None:
    text = handshake_warning(
        "broker", "localhost", 6380, TlsConfig(allow_insecure=True), "handshake timed out"
    )
    assert "STEM_TLS_ALLOW_INSECURE=true" in text
    assert "already on here: check that the server speaks TLS on this port" in text
