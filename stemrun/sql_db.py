"""What the SQLite and Postgres databases share, so each SQL store is written once per role.

Named queries loaded from a `.sql` file beside the store (one file per store, `-- name: NAME`
headers, `{ns}` replaced by the namespace), and `SqlDatabase`: the connection interface the SQL
brokers, backends and schedule stores program against. `SqliteDatabase` and `PostgresDatabase`
implement it, each with its own transaction rules and parameter style; the stores see only
`read`, `write`, `transaction`, `run`, `array` and `batch`. `SqlStore` is the base of every SQL
store class: it opens the database and sends `ping` and `close` to it.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any, Generic, Protocol, TypeVar, Unpack

from stemrun.errors import StemrunError
from stemrun.store_base import Store, StoreOptions

T = TypeVar("T")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_QUERY_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def check_namespace(namespace: str) -> str:
    """The namespace, if it is a valid SQL identifier prefix; raises ValueError otherwise."""
    if not _IDENTIFIER.match(namespace):
        raise ValueError(
            f"namespace {namespace!r} must be an identifier ([A-Za-z_][A-Za-z0-9_]*) "
            "because it prefixes table names"
        )
    return namespace


@functools.cache
def _query_file(package: str, filename: str) -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    pieces = _QUERY_HEADER.split(text)
    # split() yields [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(pieces[1::2], pieces[2::2], strict=True)}


def load_queries(package: str, filename: str, namespace: str) -> dict[str, str]:
    """Named queries of `package/filename` with `{ns}` replaced by the (checked) namespace.

    Raises ValueError for a namespace that is not an identifier.
    """
    check_namespace(namespace)
    return {
        name: body.replace("{ns}", namespace)
        for name, body in _query_file(package, filename).items()
    }


def store_queries(store: Store, package: str, filename: str) -> dict[str, str]:
    """The named queries of `store` in its namespace; raises the store's error naming it."""
    try:
        return load_queries(package, filename, store.namespace)
    except ValueError as exc:
        raise store.error(f"{store.label}: {exc}") from exc


class SqlCursor(Protocol):
    """What the stores use of a sqlite3 or psycopg cursor."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The remaining rows, one by one."""
        ...


class SqlConnection(Protocol):
    """What the stores use of a sqlite3 or psycopg connection."""

    def execute(self, query: str, params: Any = ..., /) -> SqlCursor:
        """Run one statement."""
        ...


class SqlDatabase(ABC):
    """One store's connection to a SQL database, and the rules of its dialect.

    Every context manager raises the store's role error (or its unavailable error) naming the
    role and the masked URL; nothing from sqlite3 or psycopg escapes.
    """

    def __init__(self, store: Store, package: str, filename: str) -> None:
        """Take the store's URL, role and error, and the named queries of `package/filename`.

        Raises the store's error for a namespace that cannot prefix table names.
        """
        self.url = store.url
        self.role = store.role
        self.error = store.error
        #: The store's named queries, `{ns}` already replaced.
        self.queries = store_queries(store, package, filename)

    @abstractmethod
    def fail(self, what: str, exc: BaseException | None = None) -> StemrunError:
        """An error instance saying what failed, on which store."""

    @abstractmethod
    def read(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A connection for the block's reads; raises the store's error."""

    @abstractmethod
    def write(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A connection for writes of which each statement stands alone (it may commit by
        itself); raises the store's error. Use `transaction` when the block must be atomic."""

    @abstractmethod
    def transaction(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A connection whose block runs in one transaction; raises the store's error."""

    def run(self, what: str, fn: Callable[[SqlConnection], T]) -> T:
        """`fn(conn)` in one transaction (a dialect may retry it after a lost race).

        Raises the store's error.
        """
        with self.transaction(what) as conn:
            return fn(conn)

    @abstractmethod
    def array(self, values: Iterable[Any]) -> Any:
        """`values` as the one parameter a query takes for a list (`:ids`, `%(ids)s`)."""

    @abstractmethod
    def batch(self, conn: SqlConnection, query: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run `query` for every row (each a mapping of the same named parameters)."""

    def ping(self) -> None:
        """Run a trivial query; raises the store's error (or its unavailable error)."""
        with self.read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


DbT = TypeVar("DbT", bound=SqlDatabase)


class SqlStore(Store, Generic[DbT]):
    """A store on a SQL database, opened with the store; `ping` and `close` go to it."""

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)
        self._db: DbT = self._open_database()
        self._q = self._db.queries

    @abstractmethod
    def _open_database(self) -> DbT:
        """The database with this store's named queries; raises the role's error."""

    @property
    def database(self) -> DbT:
        """The connection; another store on the same database may write in its transactions."""
        return self._db

    def ping(self) -> None:
        """Run a trivial query; raises the role's error (its unavailable error when the server
        cannot be reached)."""
        self._db.ping()

    def close(self) -> None:
        """Close the connection; raises the role's error."""
        self._db.close()
