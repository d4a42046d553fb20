"""SQLite plumbing shared by the embedded broker and result backend.

URL to path, one connection per store object with the pragmas that make it safe across processes,
named queries loaded from a `.sql` file, and translation of sqlite3 errors into stemrun errors.
Brokers and backends never import each other; both build on this module.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from stemrun.errors import StemrunError
from stemrun.url import mask_url

#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_QUERY_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


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
    """Named queries of `package/filename` with `{ns}` replaced by the (checked) namespace."""
    check_namespace(namespace)
    return {
        name: body.replace("{ns}", namespace)
        for name, body in _query_file(package, filename).items()
    }


class SqliteDatabase:
    """One connection to one SQLite file, shared by a store object's threads under a lock.

    Every failure surfaces as `error` (BrokerError or BackendError) naming the role and URL.
    """

    def __init__(
        self,
        url: str,
        *,
        role: str,
        error: type[StemrunError],
        queries: dict[str, str],
        base_dir: Path | None = None,
    ) -> None:
        self.url = url
        self.role = role
        self.error = error
        self.queries = queries
        self.lock = threading.Lock()
        self._base_dir = base_dir
        self._pid = os.getpid()
        self.conn = self._open(base_dir)

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

    def data_version(self) -> int:
        """A number that changes whenever another connection commits; raises `error`."""
        with self.read("poll for changes") as conn:
            row = conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection; raises `error` if SQLite refuses."""
        with self.read("close") as conn:
            conn.close()
