"""What a reload must prove before it hands over, and the bounded stop of a child.

See docs/supervisor.md: a reload opens each store it changes and imports the handlers of the
workers it starts; a stop drains each child for at most its group's `shutdown_timeout`.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stemrun import signals
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.supervisor.children import FORCE_GRACE_S, Child
from stemrun.supervisor.generation import Selection, diff, wanted
from stemrun.supervisor.imports import problems
from stemrun.supervisor.preflight import Checks, Preflight, needed
from stemrun.supervisor.reload import ReloadFailures
from stemrun.worker.plan import resolve

BASE: dict[str, Any] = {
    "version": 1,
    "broker": "sqlite:///.stem/stem.db",
    "queues": {"default": {}, "reports": {}},
    "tasks": {
        "record": {"handler": "app:record", "queue": "default"},
        "report": {"handler": "app:report", "queue": "reports"},
    },
    "workers": {
        "web": {"queues": ["default"], "concurrency": 2},
        "batch": {"queues": ["reports"], "concurrency": 1},
    },
    "schedules": {"nightly": {"task": "report", "spec": "cron:0 3 * * *"}},
}


def config(edit: Any = None, root: Path = Path("/srv/app")) -> Config:
    data = copy.deepcopy(BASE)
    if edit is not None:
        edit(data)
    return config_from_mapping(data, root_dir=root, env={})


def checks_for(edit: Any) -> Checks:
    old, new = config(), config(edit)
    change = diff(wanted(old, Selection()), wanted(new, Selection()))
    return needed(old, new, change)


def test_a_group_edit_imports_that_groups_handlers_and_opens_no_store() -> None:
    checks = checks_for(lambda d: d["workers"]["web"].update(concurrency=3))
    assert checks.stores == ()
    assert dict(checks.handlers) == {"record": "app:record"}


def test_a_store_edit_opens_the_changed_stores_and_imports_every_workers_handlers() -> None:
    checks = checks_for(lambda d: d.update(result_backend="redis://127.0.0.1:6379/0"))
    # The schedule store defaults to the result backend: it moves too.
    assert checks.stores == ("result_backend", "schedule_store")
    assert dict(checks.handlers) == {"record": "app:record", "report": "app:report"}


def test_a_schedule_or_beat_edit_needs_no_check() -> None:
    assert checks_for(lambda d: d["schedules"]["nightly"].update(spec="cron:0 4 * * *")).empty
    assert checks_for(lambda d: d.update(beat={"tick_interval": "2s"})).empty


def test_a_namespace_edit_reopens_every_store() -> None:
    checks = checks_for(lambda d: d.update(namespace="other"))
    assert checks.stores == ("broker", "result_backend", "schedule_store")


def test_handlers_import_or_are_named_with_their_error(tmp_path: Path) -> None:
    (tmp_path / "goodmod.py").write_text("def run() -> int:\n    return 1\n")
    (tmp_path / "badmod.py").write_text("def run(:\n")
    found = problems(tmp_path, {"ok": "goodmod:run", "bad": "badmod:run", "gone": "nomod_xyz:f"})
    assert len(found) == 2
    assert found[0].startswith("tasks.bad.handler: handler 'badmod:run': cannot import")
    assert "SyntaxError" in found[0]
    assert found[1].startswith("tasks.gone.handler: handler 'nomod_xyz:f': cannot import")


def wait_outcome(preflight: Preflight) -> list[str]:
    deadline = time.monotonic() + 30
    while (outcome := preflight.outcome()) is None:
        assert time.monotonic() < deadline, "the preflight never finished"
        time.sleep(0.05)
    return outcome


def test_preflight_passes_when_stores_open_and_handlers_import(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def record() -> None: ...\ndef report() -> None: ...\n")
    cfg = config(root=tmp_path)
    checks = Checks(stores=("broker",), handlers={"record": "app:record"})
    assert wait_outcome(Preflight(cfg, checks)) == []


def test_preflight_reports_a_store_that_does_not_open_and_a_handler_that_does_not_import(
    tmp_path: Path,
) -> None:
    cfg = config(lambda d: d.update(result_backend="redis://127.0.0.1:1/0"), root=tmp_path)
    checks = Checks(stores=("result_backend",), handlers={"record": "app:record"})
    found = wait_outcome(Preflight(cfg, checks))
    assert len(found) == 2
    assert found[0].startswith("result_backend: result backend redis://127.0.0.1:1/0")
    assert found[1].startswith("tasks.record.handler: handler 'app:record': cannot import")


def test_shutdown_timeout_defaults_to_30s_and_reaches_the_worker_plan() -> None:
    assert resolve(config(), group="web").shutdown_timeout_s == 30.0
    cfg = config(lambda d: d["workers"]["web"].update(shutdown_timeout="90s"))
    assert cfg.workers["web"].shutdown_timeout_s == 90.0
    assert resolve(cfg, group="web").shutdown_timeout_s == 90.0


def test_a_shutdown_timeout_edit_restarts_nobody() -> None:
    """The supervisor bounds the stops of its children from the running config."""
    old = config()
    new = config(lambda d: d["workers"]["web"].update(shutdown_timeout="5s"))
    assert diff(wanted(old, Selection()), wanted(new, Selection())).empty


def test_the_second_stop_signal_of_either_kind_forces() -> None:
    calls: list[bool] = []
    on_stop = signals.stop_handler(calls.append, lambda: bool(calls))
    on_stop(signal.SIGTERM)
    on_stop(signal.SIGTERM)
    on_stop(signal.SIGINT)
    assert calls == [True, False, False]


COUNTS_SIGTERMS = """
import signal, sys, time
def note(signum, frame):
    print("SIGTERM", flush=True)
signal.signal(signal.SIGTERM, note)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def stubborn_child() -> Any:
    """A child that notes every SIGTERM and never exits on its own."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COUNTS_SIGTERMS], stdout=subprocess.PIPE, text=True, process_group=0
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    spec = next(iter(wanted(config(), Selection()).values()))
    yield Child(spec, "test", Path("stem.yaml"), proc, 0.0), proc
    proc.kill()
    proc.wait()


def test_a_bounded_stop_drains_once_then_forces_then_kills(stubborn_child: Any) -> None:
    child, proc = stubborn_child
    child.bound(100.0, 10.0)
    child.bound(101.0, 10.0)  # a second bound neither signals again nor moves the deadline
    assert proc.stdout.readline() == "SIGTERM\n"
    assert child.enforce(109.9) is None
    assert child.enforce(110.0) == "forced"
    assert proc.stdout.readline() == "SIGTERM\n"  # the second SIGTERM: a worker forces its stop
    assert child.enforce(110.0 + FORCE_GRACE_S - 0.1) is None
    assert child.enforce(110.0 + FORCE_GRACE_S) == "killed"
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert child.enforce(200.0) is None


def test_refused_reloads_are_served_as_a_counter() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    failures = ReloadFailures()
    registry = CollectorRegistry()
    registry.register(failures)
    failures.count += 2
    assert b"stem_config_reload_failures_total 2.0" in generate_latest(registry)
