"""A SQLite broker with a Postgres result backend, driven through the CLI as a user would."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests import services
from tests.e2e.conftest import STEM_YAML, Project


def _use_backend(project: Project, url: str, namespace: str) -> None:
    text = STEM_YAML.replace(
        "broker: sqlite:///.stem/stem.db\n",
        f"broker: sqlite:///.stem/stem.db\nresult_backend: {url}\nnamespace: {namespace}\n",
    )
    (project.root / "stem.yaml").write_text(text)


def test_worker_writes_results_that_status_reads_from_postgres(
    project: Project, postgres_url: str
) -> None:
    namespace = f"e{uuid.uuid4().hex[:10]}"
    _use_backend(project, postgres_url, namespace)
    project.start("worker")
    done = project.run("enqueue", "record", "--args", '{"n": 7}', "--wait", "--timeout", "60s")
    assert done.returncode == 0, done.stderr + project.logs()
    task_id = json.loads(done.stdout)["id"]

    status = project.run("status", task_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["result"] == 7
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            f"SELECT state, attempt, data->'result' FROM {namespace}_status WHERE id = %s",
            (task_id,),
        ).fetchone()
    assert row == ("succeeded", 0, 7)
    assert project.ledger_lines() == ["7"]


def test_everything_on_postgres_broker_included(project: Project, postgres_url: str) -> None:
    namespace = f"e{uuid.uuid4().hex[:10]}"
    _use_backend(project, postgres_url, namespace)
    text = (project.root / "stem.yaml").read_text()
    (project.root / "stem.yaml").write_text(
        text.replace("broker: sqlite:///.stem/stem.db", f"broker: {postgres_url}")
    )
    project.start("worker")
    for n in (1, 2):
        done = project.run(
            "enqueue", "record", "--args", f'{{"n": {n}}}', "--wait", "--timeout", "60s"
        )
        assert done.returncode == 0, done.stderr + project.logs()
        assert json.loads(done.stdout)["result"] == n
    assert not (project.root / ".stem").exists(), "nothing may fall back to SQLite"
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute(f"SELECT count(*) FROM {namespace}_messages").fetchone()
    assert left == (0,), "acknowledged messages are deleted"


@pytest.mark.parametrize(
    ("url", "masked", "reason"),
    [
        (
            "postgresql://stem:hunter2@127.0.0.1:1/jobs",
            "postgresql://stem:***@127.0.0.1:1/jobs",
            "Connection refused",
        ),
        (
            "postgresql://postgres:hunter2@127.0.0.1:5432/no_such_db_stemrun",
            "postgresql://postgres:***@127.0.0.1:5432/no_such_db_stemrun",
            'database "no_such_db_stemrun" does not exist',
        ),
    ],
    ids=["unreachable", "wrong-database"],
)
def test_status_with_a_bad_postgres_url_exits_1_naming_the_masked_url(
    project: Project, url: str, masked: str, reason: str
) -> None:
    if "5432" in url:
        services.require_postgres()
    _use_backend(project, url, "stem")
    done = project.run("status", "some-id", "--json")
    assert done.returncode == 1
    assert f"result backend {masked}: cannot connect" in done.stderr
    assert reason in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
