"""Dashboard pieces without a web server: counter sampling, record listing, the extra check."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stemrun.backends.base import ResultBackend
from stemrun.backends.memory import MemoryBackend
from stemrun.backends.record import StatusRecord
from stemrun.backends.sqlite import SqliteBackend
from stemrun.cli.app import app
from stemrun.dashboard import security
from stemrun.dashboard.throughput import Sampler, chart
from stemrun.state import TaskState


def test_sampler_turns_counter_totals_into_per_minute_rates() -> None:
    sampler = Sampler()
    sampler.add(100.0, {"succeeded": 10, "failed": 0, "retried": 0})
    sampler.add(130.0, {"succeeded": 40, "failed": 1, "retried": 2})
    sampler.add(130.5, {"succeeded": 41, "failed": 1, "retried": 2})  # replaces the last: < 1 s
    [rate] = sampler.rates()
    assert (rate.succeeded, rate.failed) == (
        pytest.approx(31 * 60 / 30.5),
        pytest.approx(3 * 60 / 30.5),
    )
    drawn = chart(sampler.rates(), now=130.5)
    assert drawn["failure_rate"] == round(100 * 3 / 34, 1)
    assert drawn["succeeded"].count(",") == 1


def test_sampler_forgets_samples_older_than_the_window() -> None:
    sampler = Sampler()
    sampler.add(0.0, {"succeeded": 5})
    sampler.add(10.0, {"succeeded": 6})
    sampler.add(1000.0, {"succeeded": 7})
    assert sampler.rates() == []


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> ResultBackend:
    if request.param == "memory":
        return MemoryBackend()
    return SqliteBackend("sqlite:///stem.db", base_dir=tmp_path)


def test_list_records_filters_newest_first_and_pages(backend: ResultBackend) -> None:
    records = [
        StatusRecord(id=f"t{i}", task="a" if i % 2 else "b", state=TaskState.QUEUED, queue="q")
        for i in range(5)
    ]
    records = [
        StatusRecord(**{**r.to_dict(), "state": r.state, "created_at": float(i)})
        for i, r in enumerate(records)
    ]
    backend.create(records)
    backend.replace(StatusRecord(id="t4", task="b", state=TaskState.FAILED, queue="q2"))
    assert [r.id for r in backend.list_records()] == ["t3", "t2", "t1", "t0", "t4"]
    assert [r.id for r in backend.list_records(task="a")] == ["t3", "t1"]
    assert [r.id for r in backend.list_records(state="failed")] == ["t4"]
    assert [r.id for r in backend.list_records(queue="q", limit=2, offset=1)] == ["t2", "t1"]
    backend.close()


def test_basic_auth_without_a_colon_is_refused() -> None:
    import base64

    guard = security.Guard("pw")
    assert not guard.authorized("Basic " + base64.b64encode(b"pw").decode())
    assert guard.authorized("Basic " + base64.b64encode(b":pw").decode())
    assert security.Guard(None).authorized(None)


def test_dashboard_without_its_extra_exits_2_naming_the_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jinja2" else real(name, *a)
    )
    done = CliRunner().invoke(app, ["dashboard", "-C", str(tmp_path / "stem.yaml")])
    assert done.exit_code == 2
    assert "pip install 'stemrun[dashboard]'" in done.output
