"""SQLite plumbing shared by the embedded broker, result backend and schedule store.

URL to path, one connection per store object with the pragmas that make it safe across processes,
and translation of sqlite3 errors into stemrun errors. `SqliteDatabase` is the SQLite dialect of
`stemrun.sql_db.SqlDatabase`: every write is one BEGIN IMMEDIATE transaction and a list travels
as JSON text that queries expand with `json_each`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from stemrun.errors import StemrunError
from stemrun.sql_db import SqlConnection, SqlDatabase
from stemrun.url import mask_url

if TYPE_CHECKING:
    from stemrun.store_base import Store

#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0


def sqlite_path(url: str, base_dir: Path | None = None) -> Path:
    """The database file of a `sqlite:///rel.db` or `sqlite:////abs.db` URL.

    Relative paths resolve against `base_dir` (the directory of stem.yaml), else the cwd.
    Raises ValueError for a URL that names no file.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or len(parts.path) < 2:
        raise ValueError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = Path(parts.path[1:])
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return path


class SqliteDatabase(SqlDatabase):
    """One connection to one SQLite file, shared by a store object's threads under a lock.

    Every failure surfaces as `error` (BrokerError, BackendError, ...) naming the role and URL.
    """

    def __init__(self, store: Store, package: str, filename: str) -> None:
        super().__init__(store, package, filename)
        self.lock = threading.Lock()
        self._base_dir = store.base_dir
        self._pid = os.getpid()
        self.conn = self._open(self._base_dir)

    def fail(self, what: str, exc: BaseException | None = None) -> StemrunError:
        """An `error` instance saying what failed, on which store."""
        detail = f": {exc}" if exc is not None else ""
        return self.error(f"{self.role} {mask_url(self.url)}: {what}{detail}")

    def _open(self, base_dir: Path | None) -> sqlite3.Connection:
        try:
            path = sqlite_path(self.url, base_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every write below opens its own BEGIN IMMEDIATE, so the
            # module never starts a deferred transaction that could deadlock on upgrade.
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (ValueError, OSError, sqlite3.Error) as exc:
            raise self.fail("cannot open the database", exc) from exc
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._prepare(conn)
                return conn
            except sqlite3.OperationalError as exc:
                # Switching a fresh file to WAL while another process opens it can report
                # "locked" at once, without waiting on the busy timeout: retry for a while.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise self.fail("cannot prepare the database", exc) from exc
                time.sleep(0.01)
            except sqlite3.Error as exc:
                conn.close()
                raise self.fail("cannot prepare the database", exc) from exc

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        self._create_schema(conn)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in self.queries["schema"].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _owned_lock(self) -> threading.Lock:
        if self._pid != os.getpid():
            # A forked child must never use its parent's connection (SQLite forbids it) nor
            # its lock (another thread may have held it at fork time): start afresh, and leave
            # the inherited connection unclosed so the parent's file state is not disturbed.
            self._pid = os.getpid()
            self.lock = threading.Lock()
            self.conn = self._open(self._base_dir)
        return self.lock

    @contextmanager
    def write(self, what: str) -> Iterator[sqlite3.Connection]:
        """Run the block in one BEGIN IMMEDIATE transaction; raises `error` on failure."""
        with self._owned_lock():
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.fail(what, exc) from exc
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self.fail(what, exc) from exc
                raise

    def transaction(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """Run the block in one BEGIN IMMEDIATE transaction (as every write); raises `error`."""
        return self.write(what)

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                # Rollback fails only when SQLite already rolled back; the original error matters.
                pass

    @contextmanager
    def read(self, what: str) -> Iterator[sqlite3.Connection]:
        """Run the block's reads (autocommit); raises `error` on failure."""
        with self._owned_lock():
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise self.fail(what, exc) from exc

    def array(self, values: Iterable[Any]) -> str:
        """A list as JSON text, which queries expand with `json_each(:name)`."""
        return json.dumps(list(values))

    def batch(self, conn: SqlConnection, query: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run `query` once per row (executemany: one call from Python)."""
        # `conn` is an sqlite3 connection (on this file, maybe another store's), which has
        # executemany (psycopg's has not).
        cast(sqlite3.Connection, conn).executemany(query, rows)

    def data_version(self) -> int:
        """A number that changes whenever another connection commits; raises `error`."""
        with self.read("poll for changes") as conn:
            row = conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection; raises `error` if SQLite refuses."""
        with self.read("close") as conn:
            conn.close()
