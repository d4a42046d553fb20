"""The files the `tls` section names: present, readable, and (for `validate`) usable by OpenSSL.

A missing certificate otherwise surfaces only when a store connects, as the client library's
"Error 2 ... No such file or directory" wrapped in "unreachable" (docs/tls.md).
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

from stemrun.config.model import TlsConfig
from stemrun.config.problem import Problem

#: tls keys naming a file, and the variable that overrides each.
TLS_FILES = {
    "ca_cert": "STEM_TLS_CA_CERT",
    "client_cert": "STEM_TLS_CLIENT_CERT",
    "client_key": "STEM_TLS_CLIENT_KEY",
}
_RELATIVE = "relative paths resolve against the directory of stem.yaml"
# "[SSL] PEM lib (_ssl.c:3926)" -> "PEM lib": the bracket and the C source line help nobody.
_SSL_NOISE = re.compile(r"^\[[A-Za-z0-9_: ]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def missing_tls_files(tls: TlsConfig | None) -> list[Problem]:
    """A problem per tls path that does not name a readable file (cheap: no file is parsed)."""
    if tls is None:
        return []
    problems = []
    for key in TLS_FILES:
        path: Path | None = getattr(tls, key)
        reason = None if path is None else _unreadable(path)
        if reason is not None:
            problems.append(Problem(path=("tls", key), message=f"{path}: {reason}"))
    return problems


def tls_file_problems(tls: TlsConfig | None) -> list[Problem]:
    """`missing_tls_files`, then whether OpenSSL accepts the CA and the client certificate/key."""
    problems = missing_tls_files(tls)
    if tls is None or problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_cert is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_cert))
        except ssl.SSLError as exc:
            message = f"{tls.ca_cert}: not a PEM CA certificate ({_openssl(exc)})"
            problems.append(Problem(path=("tls", "ca_cert"), message=message))
    if tls.client_cert is not None:
        problems += _client_pair_problems(context, tls.client_cert, tls.client_key)
    return problems


def _client_pair_problems(context: ssl.SSLContext, cert: Path, key: Path | None) -> list[Problem]:
    try:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except ssl.SSLError as exc:
        if key is None:
            message = f"{cert}: no usable certificate and private key in it ({_openssl(exc)}); "
            message += "name the key file in tls.client_key"
            return [Problem(path=("tls", "client_cert"), message=message)]
        message = f"{cert} with key {key}: not a usable certificate and key ({_openssl(exc)})"
        return [Problem(path=("tls", "client_key"), message=message)]
    return []


def _unreadable(path: Path) -> str | None:
    if not path.exists():
        return f"no such file ({_RELATIVE})"
    if not path.is_file():
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def _openssl(error: ssl.SSLError) -> str:
    """OpenSSL's reason in words: "KEY_VALUES_MISMATCH" -> "key values mismatch"."""
    text = error.reason or _SSL_NOISE.sub("", str(error.args[-1]))
    return text.replace("_", " ").lower()
