"""The `tls` section turned into client settings for Redis and Postgres, and handshake diagnostics.

One place decides what "verify" means for every store: the CA from `tls.ca_cert` (or the system
store), the client certificate for mutual TLS, and `allow_insecure` to skip verification while a
certificate problem is being fixed.
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import Any

from stemrun.config.model import TlsConfig
from stemrun.config.problem import format_path
from stemrun.config.tls_files import TLS_FILES, missing_tls_files
from stemrun.errors import ConfigError

INSECURE_HINT = "set STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"
#: How a failure reads when the server does not speak TLS at all (docs/tls.md).
NOT_TLS = "the port does not speak TLS"
_PLAIN_PORT_FIX = "use redis:// (not rediss://) for a plain-text port, or the server's TLS port"
#: What OpenSSL says when the first bytes back are not a TLS record: a plain-text answer.
_PLAIN_ANSWERS = ("wrong version number", "record layer failure", "packet length too long")

#: The logger that carries the one handshake warning per failed connection.
logger = logging.getLogger("stemrun.tls")

# "[SSL: CODE] text (_ssl.c:1006)" -> "text": the bracket and the C source line help nobody.
_SSL_NOISE = re.compile(r"^\[[A-Z0-9_: ]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def require_tls_files(tls: TlsConfig | None) -> None:
    """Raises ConfigError naming each tls path that is not a readable file."""
    problems = missing_tls_files(tls)
    if problems:
        raise ConfigError(
            [f"{format_path(p.path)} ({TLS_FILES[str(p.path[-1])]}): {p.message}" for p in problems]
        )


def redis_kwargs(tls: TlsConfig | None) -> dict[str, Any]:
    """Keyword arguments for redis-py's connection (used with `rediss://` URLs)."""
    tls = tls or TlsConfig()
    kwargs: dict[str, Any] = {
        "ssl_cert_reqs": "none" if tls.allow_insecure else "required",
        "ssl_check_hostname": not tls.allow_insecure,
    }
    if tls.ca_cert is not None:
        kwargs["ssl_ca_certs"] = str(tls.ca_cert)
    if tls.client_cert is not None:
        kwargs["ssl_certfile"] = str(tls.client_cert)
    if tls.client_key is not None:
        kwargs["ssl_keyfile"] = str(tls.client_key)
    return kwargs


def postgres_kwargs(tls: TlsConfig | None) -> dict[str, str]:
    """libpq connection parameters (`sslmode`, `sslrootcert`, ...) for a configured tls section.

    Without a tls section nothing is added, so the URL's own `sslmode` applies.
    """
    if tls is None:
        return {}
    params = {"sslmode": "require" if tls.allow_insecure else "verify-full"}
    if tls.ca_cert is not None and not tls.allow_insecure:
        params["sslrootcert"] = str(tls.ca_cert)
    elif not tls.allow_insecure:
        params["sslrootcert"] = "system"
    if tls.client_cert is not None:
        params["sslcert"] = str(tls.client_cert)
    if tls.client_key is not None:
        params["sslkey"] = str(tls.client_key)
    return params


def ssl_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """A client SSLContext for the tls section (system CAs when no `ca_cert`)."""
    tls = tls or TlsConfig()
    context = ssl.create_default_context(cafile=str(tls.ca_cert) if tls.ca_cert else None)
    if tls.allow_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_cert is not None:
        context.load_cert_chain(
            str(tls.client_cert), str(tls.client_key) if tls.client_key else None
        )
    return context


def trust_summary(tls: TlsConfig | None) -> tuple[str, str]:
    """The CA path (or "system") and client certificate path (or "not provided") in use."""
    tls = tls or TlsConfig()
    ca = str(tls.ca_cert) if tls.ca_cert else "system"
    cert = str(tls.client_cert) if tls.client_cert else "not provided"
    return ca, cert


def handshake_warning(
    component: str, host: str, port: int | None, tls: TlsConfig | None, error: object
) -> str:
    """The one-line warning for a failed TLS handshake (docs/tls.md, "When the handshake fails").

    `error` may be the exception itself: its TLS reason (not the client library's wrapper
    text) is what gets shown.
    """
    if isinstance(error, BaseException):
        error = tls_failure_reason(error) or error
    if any(answer in str(error) for answer in _PLAIN_ANSWERS):
        error = f"{NOT_TLS} (the server answered in plain text: {error})"
    if str(error).startswith(NOT_TLS):
        # No TLS setting gets through a port without TLS: say what to change instead.
        error = f"{error}: {_PLAIN_PORT_FIX}"
    where = f"{host}:{port}" if port else host
    ca, cert = trust_summary(tls)
    hint = INSECURE_HINT
    if tls is not None and tls.allow_insecure:
        # Verification is already off, so the usual way out cannot help: say what else it is.
        hint += " (it is already on here: check that the server speaks TLS on this port)"
    return (
        f"TLS handshake with {component} at {where} failed: {error} "
        f"(CA: {ca}; client cert: {cert}); {hint}"
    )


def log_handshake_failure(
    component: str, host: str, port: int | None, tls: TlsConfig | None, error: object
) -> str:
    """Log the handshake warning once on the `stemrun.tls` logger and return its text."""
    text = handshake_warning(component, host, port, tls, error)
    logger.warning(text)
    return text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    # Client libraries wrap the ssl error (redis-py keeps it only as __context__).
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def tls_failure_reason(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, in OpenSSL's words, or None when `exc` is not a TLS failure."""
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError) and link.verify_message:
            return f"certificate verify failed: {link.verify_message}"
        if isinstance(link, ssl.SSLEOFError):
            # What a server requiring client certificates often does instead of sending an alert.
            return f"the server closed the connection during the handshake ({_openssl_text(link)})"
        if isinstance(link, ssl.SSLError):
            return _openssl_text(link)
    for link in _chain(exc):
        text = str(link)
        # Some clients (libpq) report TLS problems only as text, with no ssl exception.
        if any(word in text.lower() for word in ("ssl", "certificate", "tls", "handshake")):
            return text
    return None


def _openssl_text(error: ssl.SSLError) -> str:
    text = str(error.args[1]) if len(error.args) > 1 else str(error)
    return _SSL_NOISE.sub("", text) or str(error)


def looks_like_tls_failure(exc: BaseException) -> bool:
    """Whether an exception (or its causes) comes from a TLS handshake."""
    return tls_failure_reason(exc) is not None
