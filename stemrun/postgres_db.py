"""Postgres plumbing shared by the result backend, the schedule store and the broker.

One connection per store object, guarded by a lock and reopened after a failure or a fork;
connection parameters built from the URL plus the tls section; tables created when missing under
a transaction-scoped advisory lock, so several processes starting at once on an empty schema all
succeed; and psycopg errors translated into stemrun errors naming the role and the masked URL.
`PostgresDatabase` is the Postgres dialect of `stemrun.sql_db.SqlDatabase`: reads and lone
statements run in autocommit, and a batch travels as one array per column that the query unnests.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import conninfo, errors

from stemrun.config.model import TlsConfig
from stemrun.errors import StemrunError
from stemrun.sql_db import SqlConnection, SqlDatabase
from stemrun.tls import handshake_warning, looks_like_tls_failure, postgres_kwargs
from stemrun.url import mask_url

if TYPE_CHECKING:
    from stemrun.store_base import Store

#: A store that does not answer within this many seconds is reported unavailable.
CONNECT_TIMEOUT_S = 5

#: How often a transaction that lost a deadlock or serialisation race is run again.
RACE_RETRIES = 3

T = TypeVar("T")

tls_log = logging.getLogger("stemrun.tls")

_warned: set[str] = set()
_warned_lock = threading.Lock()
# Connections inherited through fork() are parked here, never closed nor collected: finalising
# one would send libpq's terminate message on the socket the parent is still using.
_inherited: list[psycopg.Connection[Any]] = []


def connection_params(url: str, tls: TlsConfig | None) -> dict[str, Any]:
    """libpq parameters for `url` with the tls section and a connect timeout merged in.

    The tls section wins over the URL's own ssl parameters. Raises ValueError for a bad URL.
    """
    try:
        params: dict[str, Any] = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"not a valid Postgres URL ({exc})") from exc
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    params.update(postgres_kwargs(tls))
    return params


def columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows of the same named parameters as one list per name, for queries that unnest them."""
    if not rows:
        return {}
    return {name: [row[name] for row in rows] for name in rows[0]}


def warn_tls_once(component: str, url: str, tls: TlsConfig | None, exc: BaseException) -> str:
    """The handshake warning for `exc` (docs/tls.md), logged on "stemrun.tls" once per process."""
    parts = urlsplit(url)
    message = handshake_warning(
        component, parts.hostname or "localhost", parts.port or 5432, tls, _first_line(exc)
    )
    key = f"{component} {mask_url(url)}"
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    if first:
        tls_log.warning(message)
    return message


class PostgresDatabase(SqlDatabase):
    """One lazily opened connection to one Postgres store, shared by threads under a lock.

    Failures surface as `error` (BackendError, BrokerError) or, when the server cannot be
    reached, as `unavailable` (BackendUnavailable, BrokerUnavailable), naming role and URL.
    """

    def __init__(self, store: Store, package: str, filename: str) -> None:
        super().__init__(store, package, filename)
        self.unavailable = store.unavailable
        self.tls = store.tls
        self.lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: psycopg.Connection[Any] | None = None
        self._migrated = False
        try:
            self._params = connection_params(self.url, self.tls)
        except ValueError as exc:
            raise self.fail("cannot use this URL", exc) from exc

    @property
    def params(self) -> dict[str, Any]:
        """The libpq parameters connections are opened with (tls section merged in)."""
        return dict(self._params)

    def fail(self, what: str, exc: BaseException | None = None) -> StemrunError:
        """An `error` instance saying what failed, on which store."""
        detail = f": {_first_line(exc)}" if exc is not None else ""
        return self.error(f"{self.role} {mask_url(self.url)}: {what}{detail}")

    def _unreachable(self, exc: psycopg.Error) -> StemrunError:
        if self._params.get("sslmode") and looks_like_tls_failure(exc):
            warning = warn_tls_once(self.role, self.url, self.tls, exc)
            return self.unavailable(f"{self.role} {mask_url(self.url)}: {warning}")
        return self.unavailable(
            f"{self.role} {mask_url(self.url)}: cannot connect ({_first_line(exc)}); "
            "check the host, port, database name and credentials in the URL"
        )

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(**self._params, autocommit=True)
        except psycopg.Error as exc:
            raise self._unreachable(exc) from exc
        if not self._migrated:
            try:
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._migrated = True
        return conn

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.transaction():
                # Serialises concurrent first starts: CREATE TABLE IF NOT EXISTS alone can still
                # fail with a unique violation when two sessions create the same table at once.
                schema = conn.execute("SELECT current_schema()").fetchone()
                if schema is None or schema[0] is None:
                    raise self.fail(
                        "cannot create tables: the search_path names no existing schema "
                        "(create the schema, or fix options=-csearch_path=... in the URL)"
                    )
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"stemrun:{schema[0]}",)
                )
                conn.execute(self.queries["schema"])
        except psycopg.Error as exc:
            raise self.fail("cannot create the tables", exc) from exc

    def open_connection(self) -> psycopg.Connection[Any]:
        """A new autocommit connection of the caller's own (e.g. to LISTEN on).

        Raises `unavailable` when the server cannot be reached.
        """
        with self._owned_lock():
            self._connection()  # the tables exist before anyone listens for their changes
        return self._connect()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _owned_lock(self) -> threading.Lock:
        if self._pid != os.getpid():
            # A forked child must not talk on its parent's socket (nor trust a lock another
            # thread may have held at fork time): it starts afresh on first use.
            self._pid = os.getpid()
            self.lock = threading.Lock()
            if self._conn is not None:
                _inherited.append(self._conn)
                self._conn = None
        return self.lock

    def _translate(self, what: str, exc: psycopg.Error) -> StemrunError:
        if isinstance(exc, psycopg.OperationalError) and (
            self._conn is None or self._conn.closed or self._conn.broken
        ):
            self._discard()
            return self.unavailable(
                f"{self.role} {mask_url(self.url)}: {what}: lost the connection "
                f"({_first_line(exc)})"
            )
        return self.fail(what, exc)

    def _discard(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except psycopg.Error:
                # The connection is already broken; closing is best effort.
                pass

    @contextmanager
    def transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """Run the block in one transaction; raises `error` / `unavailable` on failure."""
        with self._owned_lock():
            conn = self._connection()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise self._translate(what, exc) from exc

    def run(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn(conn)` inside one transaction, run again after a deadlock or serialisation failure.

        Raises `error` / `unavailable` on failure.
        """
        for attempt in range(RACE_RETRIES + 1):
            try:
                with self.transaction(what) as conn:
                    return fn(conn)
            except StemrunError as exc:
                raced = isinstance(
                    exc.__cause__, errors.DeadlockDetected | errors.SerializationFailure
                )
                if not raced or attempt == RACE_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def read(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """Run the block's statements each in its own implicit transaction (autocommit).

        Raises `error` / `unavailable` on failure.
        """
        with self._owned_lock():
            conn = self._connection()
            try:
                yield conn
            except psycopg.Error as exc:
                raise self._translate(what, exc) from exc

    def write(self, what: str) -> AbstractContextManager[psycopg.Connection[Any]]:
        """Run the block's statements each committing alone (autocommit): a lone statement is
        atomic without the round trips of BEGIN and COMMIT. Raises `error` / `unavailable`."""
        return self.read(what)

    def array(self, values: Iterable[Any]) -> list[Any]:
        """A list, which psycopg sends as a Postgres array (`%(ids)s::text[]`)."""
        return list(values)

    def batch(self, conn: SqlConnection, query: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run `query` once with each parameter a list of the rows' values (see `columns`)."""
        if rows:
            conn.execute(query, columns(rows))

    def close(self) -> None:
        """Close the connection (a no-op when none is open)."""
        with self._owned_lock():
            self._discard()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
