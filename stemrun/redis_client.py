"""Redis plumbing shared by the Redis broker and result backend.

One place decides how stemrun talks to Redis: URL parsing (`rediss://` uses the tls section, the
db number comes from the path), timeouts, reconnection with backoff, Lua scripts loaded from a
file of named sections, and the translation of redis-py errors into the role's stemrun errors
(naming the URL with its password masked). Brokers and backends never import each other; both
build on this module.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from stemrun.errors import StemrunError
from stemrun.tls import (
    NOT_TLS,
    handshake_warning,
    looks_like_tls_failure,
    redis_kwargs,
    require_tls_files,
    tls_failure_reason,
)
from stemrun.url import scheme_of

if TYPE_CHECKING:
    from stemrun.store_base import Store

tls_log = logging.getLogger("stemrun.tls")

#: A command that gets no answer within this time fails (and is retried, see RETRIES).
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
#: An idle pooled connection is PINGed before reuse after this long, so a restarted server is
#: noticed before a command is sent on a dead socket.
HEALTH_CHECK_INTERVAL_S = 15
#: Connection errors are retried this many times with exponential backoff (20 ms doubling, at
#: most 0.5 s), about 1 s in all; then the role's Unavailable error is raised so callers (the
#: worker loop retries every 0.5 s) never hang on a dead server.
RETRIES = 4
#: How long the plain-text PING that explains a timed-out TLS handshake may take.
PLAIN_PROBE_TIMEOUT_S = 1.0

_SCRIPT_HEADER = re.compile(r"^-- script: (\w+)[ \t]*$", re.MULTILINE)
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The Redis URL of a store, which names its role in messages and gives its error classes."""

    store: Store

    @property
    def where(self) -> str:
        """The role and masked URL, the start of every message."""
        return self.store.label

    def connect(self) -> redis.Redis:
        """A client for the URL, after checking the server answers PING.

        Raises the store's error for a malformed URL or refused credentials, its unavailable
        error when the server cannot be reached (a TLS handshake failure also logs one warning).
        """
        if scheme_of(self.store.url) == "rediss":
            # Else a missing file reads "Error 2 connecting ... No such file": "unreachable".
            require_tls_files(self.store.tls)
        try:
            _check_db(self.store.url)
            client = redis.Redis.from_url(self.store.url, **self._options())
        except ValueError as exc:
            raise self.store.error(
                f"{self.where}: invalid Redis URL ({exc}); expected "
                "redis://[[user]:password@]host[:port][/db] or rediss://..."
            ) from exc
        with self.guard("connect"):
            if scheme_of(self.store.url) == "rediss":
                self._probe_handshake()
            client.ping()
        return client

    def _probe_handshake(self) -> None:
        """PING once without retries; raises redis errors."""
        # A refused TLS handshake is then reported at once, not after every retry has waited
        # out its socket timeout.
        options = {**self._options(), "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
        probe = redis.Redis.from_url(self.store.url, **options)
        try:
            probe.ping()
        finally:
            probe.close()

    def _options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "socket_timeout": SOCKET_TIMEOUT_S,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_keepalive": True,
            "health_check_interval": HEALTH_CHECK_INTERVAL_S,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), RETRIES),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        }
        if scheme_of(self.store.url) == "rediss":
            options.update(redis_kwargs(self.store.tls))
        return options

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Translate redis-py errors raised inside the block (see `translate`)."""
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            raise self.translate(exc, what) from exc

    def translate(self, exc: BaseException, what: str) -> StemrunError:
        """The stemrun error for a redis-py error that happened while doing `what`."""
        if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc):
            return self.store.error(
                f"{self.where}: {what}: authentication failed ({exc}); "
                "check the user and password in the URL"
            )
        connection = isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)
        if connection and scheme_of(self.store.url) == "rediss" and looks_like_tls_failure(exc):
            return self.store.unavailable(self._tls_warning(exc))
        if connection:
            return self.store.unavailable(f"{self.where}: {what}: Redis is unreachable ({exc})")
        return self.store.error(f"{self.where}: {what} failed: {exc}")

    def _tls_warning(self, exc: BaseException) -> str:
        """The handshake warning (docs/tls.md), logged once per process, component and address."""
        parts = urlsplit(self.store.url)
        host, port = parts.hostname or "localhost", parts.port or 6379
        reason: object = exc
        if "timed out" in (tls_failure_reason(exc) or "") and _answers_plain_ping(host, port):
            # A plain-text Redis waits for the end of a command line that a TLS hello never
            # sends, so the handshake times out instead of failing.
            reason = f"{NOT_TLS} (it answered a plain-text PING)"
        text = handshake_warning(self.store.role, host, port, self.store.tls, reason)
        key = (self.store.role, f"{host}:{port}")
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            tls_log.warning("%s", text)
        return text


def _answers_plain_ping(host: str, port: int) -> bool:
    """Whether a plain-text Redis answers a PING at host:port (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=PLAIN_PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError:
        return False
    # Any RESP reply counts: +PONG, or an error such as -NOAUTH from a server with a password.
    return answer[:1] in (b"+", b"-") and answer.endswith(b"\r\n")


def _check_db(url: str) -> None:
    """Raises ValueError unless the URL path is empty or a db number (redis-py ignores junk)."""
    path = urlsplit(url).path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the path must be a database number, not {path!r}")


@functools.cache
def _script_file(package: str, filename: str) -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    pieces = _SCRIPT_HEADER.split(text)
    prelude = pieces[0]
    return {name: prelude + body for name, body in zip(pieces[1::2], pieces[2::2], strict=True)}


def prelude(package: str, filename: str) -> str:
    """The part of a Lua file before its first `-- script:` section (its shared functions)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return _SCRIPT_HEADER.split(text)[0]


def load_scripts(client: redis.Redis, package: str, filename: str) -> dict[str, Script]:
    """The `-- script: NAME` sections of a Lua file, each prefixed by the file's prelude.

    Scripts run with EVALSHA and are loaded again by redis-py when the server lost its script
    cache (a restart).
    """
    return {
        name: client.register_script(source)
        for name, source in _script_file(package, filename).items()
    }
