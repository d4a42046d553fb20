"""Connectivity checks of the configured stores, cheap enough for a Kubernetes probe.

Each distinct store URL is opened and pinged once, in its own thread with a deadline, so one
hanging store neither delays the others nor the probe past its timeout. Nothing imports task
handlers. A TLS failure is reported with the docs/tls.md diagnostics (component, host:port, CA,
client certificate, the STEM_TLS_ALLOW_INSECURE hint).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stemrun.config.insecure import insecure_tls, uses_tls
from stemrun.config.model import Config, TlsConfig
from stemrun.config.problem import format_path
from stemrun.errors import StemrunError, UsageError
from stemrun.stores import expected_schemes, kind_of, open_store, options_for
from stemrun.tls import (
    INSECURE_HINT,
    handshake_warning,
    require_tls_files,
    tls_failure_reason,
)
from stemrun.url import mask_url, scheme_of

logger = logging.getLogger("stemrun.health")

#: Default deadline for one store to open and answer a ping.
DEFAULT_TIMEOUT_S = 5.0

ROLES = ("broker", "result_backend", "schedule_store")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One role to check and the URL that serves it."""

    role: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """The outcome for one role; `url` is already masked."""

    role: str
    url: str
    ok: bool
    latency_ms: float
    error: str | None = None
    tls_failure: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape of one check."""
        return {
            "role": self.role,
            "url": self.url,
            "ok": self.ok,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "tls_failure": self.tls_failure,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Every role's check; healthy when all passed."""

    checks: tuple[Check, ...]

    @property
    def healthy(self) -> bool:
        """True when every store answered."""
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` document: `{"healthy": bool, "checks": [...]}`."""
        return {"healthy": self.healthy, "checks": [c.to_dict() for c in self.checks]}


def targets(config: Config, broker: str | None = None, backend: str | None = None) -> list[Target]:
    """The roles to check: the configured URLs, with `broker` / `backend` overriding their role.

    Raises UsageError for a URL whose scheme no store serves.
    """
    urls = {
        "broker": broker or config.broker,
        "result_backend": backend or config.result_backend,
        "schedule_store": config.schedule_store,
    }
    for role, url in urls.items():
        if kind_of(url) is None:
            raise UsageError(
                f"{role} {mask_url(url)}: unknown URL scheme {scheme_of(url)!r} "
                f"(expected {expected_schemes()})"
            )
    return [Target(role=role, url=urls[role]) for role in ROLES]


def check_tls_files(config: Config, items: Sequence[Target]) -> None:
    """Raises ConfigError naming each missing tls file, when a store checked would use them."""
    if any(uses_tls(item.url, config.tls) for item in items):
        require_tls_files(config.tls)


def warnings(config: Config, items: Sequence[Target]) -> list[str]:
    """What weakens the connections checked: `allow_insecure` on a TLS store (docs/tls.md)."""
    insecure = insecure_tls(config.tls, {item.role: item.url for item in items})
    return [f"{format_path(insecure.path)}: {insecure.message}"] if insecure else []


def check(config: Config, items: Sequence[Target], timeout_s: float = DEFAULT_TIMEOUT_S) -> Report:
    """Open and ping each distinct URL once (concurrently, each within `timeout_s`)."""
    by_url: dict[str, list[Target]] = {}
    for item in items:
        by_url.setdefault(item.url, []).append(item)
    probes = [_Probe(config, group, timeout_s) for group in by_url.values()]
    for probe in probes:
        probe.start()
    results: dict[str, Check] = {}
    for probe in probes:
        for result in probe.finish():
            results[result.role] = result
    return Report(checks=tuple(results[item.role] for item in items))


class _Probe:
    """One URL checked in a daemon thread; a store that hangs is abandoned at the deadline."""

    def __init__(self, config: Config, group: list[Target], timeout_s: float) -> None:
        self._config = config
        self._group = group
        self._timeout_s = timeout_s
        self._outcome: tuple[float, BaseException | None] | None = None
        self._started = 0.0
        # Daemon: a store stuck in a blocking call must not keep the probe process alive.
        self._thread = threading.Thread(target=self._run, name="stemrun-health", daemon=True)

    def start(self) -> None:
        """Begin the check."""
        self._started = time.perf_counter()
        self._thread.start()

    def finish(self) -> list[Check]:
        """Wait for the outcome (up to the deadline) and report it for every role of the URL."""
        self._thread.join(max(0.0, self._started + self._timeout_s - time.perf_counter()))
        outcome = self._outcome
        if outcome is None:
            elapsed = (time.perf_counter() - self._started) * 1000
            error = f"no answer within {self._timeout_s:g}s"
            return [self._check(t, elapsed, error, False) for t in self._group]
        elapsed, exc = outcome
        if exc is None:
            return [self._check(t, elapsed, None, False) for t in self._group]
        error, is_tls = self._describe(exc)
        return [self._check(t, elapsed, error, is_tls) for t in self._group]

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            ping_store(self._config, self._group[0].role, self._group[0].url)
        # A probe reports every failure as "unhealthy"; none may crash the command.
        except Exception as exc:
            logger.debug("health check of %s failed", mask_url(self._group[0].url), exc_info=True)
            self._outcome = ((time.perf_counter() - started) * 1000, exc)
            return
        self._outcome = ((time.perf_counter() - started) * 1000, None)

    def _describe(self, exc: BaseException) -> tuple[str, bool]:
        text = str(exc) if isinstance(exc, StemrunError) else f"{type(exc).__name__}: {exc}"
        if INSECURE_HINT in text:
            return text, True
        reason = tls_failure_reason(exc)
        if reason is None:
            return text, False
        return tls_diagnostics(self._group[0].role, self._group[0].url, self._config.tls, reason)

    def _check(self, target: Target, elapsed_ms: float, error: str | None, tls: bool) -> Check:
        password = urlsplit(target.url).password
        if error is not None and password:
            # Belt and braces: a driver message that echoes the raw URL must not leak it.
            error = error.replace(password, "***")
        return Check(
            role=target.role,
            url=mask_url(target.url),
            ok=error is None,
            latency_ms=round(elapsed_ms, 1),
            error=error,
            tls_failure=tls,
        )


def tls_diagnostics(role: str, url: str, tls: TlsConfig | None, reason: str) -> tuple[str, bool]:
    """The docs/tls.md handshake warning for `url` (host:port, CA, client cert, hint)."""
    parts = urlsplit(url)
    kind = kind_of(url)
    port = parts.port or (kind.default_port if kind else None)
    component = role.replace("_", " ")
    return handshake_warning(component, parts.hostname or "localhost", port, tls, reason), True


def ping_store(config: Config, role: str, url: str) -> None:
    """Open the store for `role` at `url`, ping it and close it. Raises StemrunError."""
    store = open_store(role, url, **options_for(config))
    try:
        store.ping()
    finally:
        store.close()
