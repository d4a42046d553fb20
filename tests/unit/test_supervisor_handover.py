"""Make before break: a replaced worker drains only once its replacement serves (or times out)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

from stemrun.backends.memory import MemoryBackend
from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.supervisor.children import Child
from stemrun.supervisor.handover import READY_TIMEOUT_S, Handovers
from stemrun.telemetry import Heartbeat


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def child(pid: int, name: str) -> Child:
    return Child(cast(Any, None), name, Path("stem.yaml"), cast(Any, FakeProcess(pid)), 0.0)


def setup() -> tuple[Handovers, MemoryBackend, Config]:
    url = f"memory://{uuid.uuid4().hex}"
    config = config_from_mapping({"version": 1, "broker": url}, root_dir=Path("/srv"), env={})
    handovers = Handovers()
    handovers.use(config)
    return handovers, MemoryBackend.open(url, namespace=config.namespace), config


def test_old_worker_keeps_serving_until_the_replacement_heartbeats() -> None:
    handovers, backend, _ = setup()
    old, new = child(10, "h.web.0"), child(11, "h.web.0.g2")
    handovers.add("worker:web:0", old, now=0.0)
    assert handovers.due({"worker:web:0": new}, now=1.0) == []
    backend.put_worker(Heartbeat(id="h.web.0.g2", host="h", pid=11), ttl_s=30)
    assert handovers.due({"worker:web:0": new}, now=1.1) == []  # checks are spaced out
    assert handovers.due({"worker:web:0": new}, now=1.5) == [
        (old, "its replacement pid 11 is serving")
    ]
    assert handovers.children() == []


def test_a_stale_heartbeat_with_the_same_name_but_another_pid_does_not_count() -> None:
    handovers, backend, _ = setup()
    old, new = child(10, "h.web.0"), child(11, "h.web.0.g2")
    backend.put_worker(Heartbeat(id="h.web.0.g2", host="h", pid=999), ttl_s=30)
    handovers.add("worker:web:0", old, now=0.0)
    assert handovers.due({"worker:web:0": new}, now=1.0) == []


def test_replacement_that_never_serves_releases_the_old_child_after_the_timeout() -> None:
    handovers, _, _ = setup()
    old = child(10, "h.web.0")
    handovers.add("worker:web:0", old, now=0.0)
    assert handovers.due({"worker:web:0": None}, now=READY_TIMEOUT_S - 1) == []
    (due,) = handovers.due({"worker:web:0": None}, now=READY_TIMEOUT_S)
    assert due[0] is old and "not serving after" in due[1]


def test_removed_slot_drains_at_once() -> None:
    handovers, _, _ = setup()
    old = child(10, "h.web.0")
    handovers.add("worker:web:0", old, now=0.0)
    assert handovers.due({}, now=0.5) == [(old, "its slot was removed")]


def test_shutdown_takes_every_waiting_child() -> None:
    handovers, _, _ = setup()
    olds = [child(10, "h.web.0"), child(12, "h.web.1")]
    for index, old in enumerate(olds):
        handovers.add(f"worker:web:{index}", old, now=0.0)
    assert handovers.take_all() == olds and handovers.children() == []
