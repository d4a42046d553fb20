"""The Postgres result backend against a real server: tables, schemas, processes, failures.

Each test runs in its own schema (the `postgres_url` fixture); nothing touches a shared table.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import psycopg
import pytest

from stemrun.backends.postgres import PostgresBackend
from stemrun.backends.record import StatusRecord, Transition
from stemrun.clock import ManualClock
from stemrun.errors import BackendError, BackendUnavailable
from stemrun.state import TaskState
from stemrun.stores import open_backend
from stemrun.telemetry import Heartbeat


def _record(task_id: str, **fields: object) -> StatusRecord:
    values: dict[str, object] = {"id": task_id, "task": "t", "state": TaskState.QUEUED}
    values["queue"] = "default"
    values.update(fields)
    return StatusRecord(**values)  # type: ignore[arg-type]


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {row[0] for row in rows}


def test_first_use_creates_prefixed_tables_in_the_url_schema(postgres_url: str) -> None:
    assert _tables(postgres_url) == set()
    backend = open_backend(postgres_url, namespace="app1")
    try:
        assert isinstance(backend, PostgresBackend)
        backend.create([_record("a")])
        flow = {"app1_rates", "app1_uniques", "app1_paused"}  # docs/flow-control.md
        outbox = {"app1_outbox"}  # messages kept until a separate broker has them
        expected = {"app1_status", "app1_workers", "app1_chords", "app1_counters", *flow, *outbox}
        assert _tables(postgres_url) == expected
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT state, data->>'task' FROM app1_status").fetchone()
            public = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'app1_status'"
            ).fetchone()
        assert row == ("queued", "t")
        assert public == (1,), "the table must exist only in the URL's schema"
    finally:
        backend.close()


def test_namespaces_share_a_schema_without_seeing_each_other(postgres_url: str) -> None:
    one = PostgresBackend(postgres_url, namespace="one")
    two = PostgresBackend(postgres_url, namespace="two")
    try:
        one.create([_record("a")])
        assert two.get("a") is None
        assert two.create([_record("a", queue="q2")]) == [True]
        got = one.get("a")
        assert got is not None and got.queue == "default"
    finally:
        one.close()
        two.close()


def _open_and_write(url: str, index: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(30)
    backend = PostgresBackend(url, namespace="race")
    backend.create([_record(f"p{index}")])
    backend.close()


def test_processes_starting_at_once_on_an_empty_schema_all_succeed(postgres_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_open_and_write, args=(postgres_url, i, start)) for i in range(4)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    backend = PostgresBackend(postgres_url, namespace="race")
    try:
        assert all(backend.get(f"p{i}") is not None for i in range(4))
    finally:
        backend.close()


def test_a_forked_child_gets_its_own_connection(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url, namespace="fork")
    backend.create([_record("parent")])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            backend.create([_record("child")])
            code = 0 if backend.get("parent") is not None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0
        assert backend.get("child") is not None, "the parent's connection must still work"
    finally:
        backend.close()


def test_a_lost_connection_is_reported_then_reopened(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url, namespace="lost")
    try:
        backend.create([_record("a")])
        assert backend.get("a") is not None  # its session's last query now names the table
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                "AND query LIKE %s",
                ("%lost_status%",),
            )
        with pytest.raises(BackendUnavailable, match="lost the connection"):
            backend.get("a")
        assert backend.get("a") is not None
    finally:
        backend.close()


def test_expiry_uses_the_stores_clock_and_purge_deletes_rows(postgres_url: str) -> None:
    clock = ManualClock()
    backend = PostgresBackend(postgres_url, namespace="ttl", clock=clock)
    try:
        backend.create([_record("a", expires_at=clock.now() + 5), _record("b")])
        backend.put_worker(Heartbeat(id="w", host="h", pid=1), ttl_s=5)
        clock.advance(6)
        assert backend.purge_expired(clock.now()) == 1
        with psycopg.connect(postgres_url) as conn:
            ids = conn.execute("SELECT id FROM ttl_status ORDER BY id").fetchall()
            workers = conn.execute("SELECT count(*) FROM ttl_workers").fetchone()
        assert ids == [("b",)] and workers == (0,)
    finally:
        backend.close()


def test_search_path_naming_a_missing_schema_is_a_clear_error(postgres_url: str) -> None:
    url = postgres_url.split("?")[0] + "?options=-csearch_path%3Dno_such_schema_here"
    backend = PostgresBackend(url)
    with pytest.raises(BackendError, match="search_path names no existing schema"):
        backend.get("a")


def test_many_transitions_in_one_batch_apply_in_order(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url, namespace="batch")
    try:
        backend.create([_record(f"t{i}") for i in range(50)])
        changes = [
            Transition(task_id=f"t{i}", attempt=0, state=TaskState.RUNNING) for i in range(50)
        ]
        changes += [
            Transition(task_id=f"t{i}", attempt=0, state=TaskState.SUCCEEDED, changes={"result": i})
            for i in range(50)
        ]
        assert backend.transition(changes) == [True] * 100
        got = backend.get("t7")
        assert got is not None and (got.state, got.result) == (TaskState.SUCCEEDED, 7)
    finally:
        backend.close()


def test_a_bad_namespace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="must be an identifier"):
        PostgresBackend("postgresql://postgres@127.0.0.1:5432/test", namespace="bad-name")


def test_list_records_filters_newest_first_and_pages(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url, namespace="lst")
    try:
        backend.create(
            [
                StatusRecord(
                    id=f"t{i}",
                    task="a" if i % 2 else "b",
                    state=TaskState.QUEUED,
                    queue="q",
                    created_at=float(i),
                )
                for i in range(5)
            ]
        )
        backend.replace(StatusRecord(id="t4", task="b", state=TaskState.FAILED, queue="q2"))
        assert [r.id for r in backend.list_records()] == ["t3", "t2", "t1", "t0", "t4"]
        assert [r.id for r in backend.list_records(task="a")] == ["t3", "t1"]
        assert [r.id for r in backend.list_records(state="failed")] == ["t4"]
        assert [r.id for r in backend.list_records(queue="q", limit=2, offset=1)] == ["t2", "t1"]
    finally:
        backend.close()
