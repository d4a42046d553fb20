"""The `tls` section turned into client settings for Redis and Postgres, and handshake diagnostics.

One place decides what "verify" means for every store: the CA from `tls.ca_cert` (or the system
store), the client certificate for mutual TLS, and `allow_insecure` to skip verification while a
certificate problem is being fixed.
"""

from __future__ import annotations

import ssl
from typing import Any

from stemrun.config.model import TlsConfig

INSECURE_HINT = "set STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"


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


def handshake_warning(
    component: str, host: str, port: int | None, tls: TlsConfig | None, error: object
) -> str:
    """The one-line warning of SPEC §8 for a failed TLS handshake."""
    tls = tls or TlsConfig()
    where = f"{host}:{port}" if port else host
    ca = str(tls.ca_cert) if tls.ca_cert else "system"
    cert = str(tls.client_cert) if tls.client_cert else "not provided"
    return (
        f"TLS handshake with {component} at {where} failed: {error} "
        f"(CA: {ca}; client cert: {cert}); {INSECURE_HINT}"
    )


def looks_like_tls_failure(exc: BaseException) -> bool:
    """Whether an exception (or its causes) comes from a TLS handshake."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        text = str(seen).lower()
        if any(word in text for word in ("ssl", "certificate", "tls", "handshake")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
