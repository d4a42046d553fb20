"""`stemrun health` as a user (or a Kubernetes probe) runs it."""

from __future__ import annotations

import json
import re

from tests.e2e.conftest import Project

LINE = re.compile(r"^(\S+)\s+(\S+)\s+(ok|FAILED)\s+(\d+\.\d) ms(?:  (.+))?$")


def _lines(stdout: str) -> dict[str, tuple[str, str, float, str | None]]:
    rows = {}
    for line in stdout.splitlines():
        match = LINE.match(line)
        assert match, f"unexpected health line: {line!r}"
        role, url, status, latency, error = match.groups()
        rows[role] = (url, status, float(latency), error)
    return rows


def test_healthy_sqlite_project_exits_0_with_one_line_per_store(project: Project) -> None:
    done = project.run("health")
    assert done.returncode == 0, done.stderr
    rows = _lines(done.stdout)
    assert list(rows) == ["broker", "result_backend", "schedule_store"]
    db_url = f"sqlite:///{project.root}/.stem/stem.db"
    assert all(url == db_url and status == "ok" for url, status, _, _ in rows.values())


def test_unreachable_broker_exits_1_naming_the_url(project: Project) -> None:
    done = project.run("health", "--broker", "redis://127.0.0.1:1/0", "--timeout", "3s")
    assert done.returncode == 1
    rows = _lines(done.stdout)
    url, status, _, error = rows["broker"]
    assert (url, status) == ("redis://127.0.0.1:1/0", "FAILED")
    assert error
    assert rows["result_backend"][1] == "ok"
    assert "unhealthy: 1 of 3 stores failed" in done.stderr


def test_a_password_is_masked_everywhere(project: Project) -> None:
    done = project.run(
        "health", "--broker", "redis://app:s3cret-pw@127.0.0.1:1/0", "--timeout", "3s"
    )
    assert done.returncode == 1
    assert _lines(done.stdout)["broker"][0] == "redis://app:***@127.0.0.1:1/0"
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_json_output_shape(project: Project) -> None:
    done = project.run("health", "--backend", "redis://127.0.0.1:1/0", "--json", "--timeout", "3s")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["healthy"] is False
    assert [c["role"] for c in report["checks"]] == ["broker", "result_backend", "schedule_store"]
    broker, backend, _ = report["checks"]
    assert {"role", "url", "ok", "latency_ms", "error"} <= set(backend)
    assert broker["ok"] is True and broker["error"] is None
    assert backend["ok"] is False and backend["url"] == "redis://127.0.0.1:1/0" and backend["error"]


def test_config_errors_exit_2(project: Project) -> None:
    bad_scheme = project.run("health", "--broker", "amqp://localhost/")
    assert bad_scheme.returncode == 2
    assert "unknown URL scheme 'amqp'" in bad_scheme.stderr
    (project.root / "stem.yaml").write_text("version: 1\nbrokr: sqlite:///x.db\n")
    bad_file = project.run("health")
    assert bad_file.returncode == 2
    assert "brokr" in bad_file.stderr
    assert bad_file.stdout == ""
