"""Canvas on in-memory stores: what starting one publishes, and how workers continue it.

`Drive` plays the worker's settle step by hand (fetch, run a fake handler, write the terminal
status, continue, ack), so crash points between those writes can be reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import Delivery
from stemrun.brokers.memory import MemoryBroker
from stemrun.canvas import Chain, Chord, Group, Signature, first_steps, from_config, with_args
from stemrun.client import Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.envelope import decode
from stemrun.errors import TaskNotRegistered, UnknownQueue, UsageError
from stemrun.state import TaskState
from stemrun.worker import settle
from stemrun.worker.continuation import Continuations
from stemrun.worker.execute import Outcome

Handler = Callable[..., Any]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stem(tmp_path: Path, clock: ManualClock) -> Iterator[Stem]:
    tasks = {name: {"handler": f"x:{name}", "max_retries": 0} for name in ("a", "b", "c", "sum")}
    config = config_from_mapping(
        {
            "broker": "memory://",
            "queues": {"default": {}, "other": {}},
            "tasks": tasks,
            "workflows": {
                "onboarding": {"chain": [{"task": "a", "args": {"k": 1}}, {"task": "b"}]},
                "fan": {"group": [{"task": "a", "args": {"k": 1}}, {"task": "b"}]},
                "reduce": {"chord": {"body": [{"task": "a"}], "callback": {"task": "sum"}}},
            },
        },
        root_dir=tmp_path,
    )
    broker, backend = MemoryBroker(clock=clock), MemoryBackend(clock=clock)
    with Stem(config, broker=broker, backend=backend, clock=clock) as client:
        yield client


@dataclass
class Drive:
    """A hand-driven worker: handlers by task name, and a log of the calls they received."""

    stem: Stem
    handlers: dict[str, Handler]
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.stem
        self.continuations = Continuations(s.config, s.broker, s.backend, s.backend, s.clock)

    def fetch(self) -> list[Delivery]:
        return self.stem.broker.fetch(["default", "other"], 100, consumer="t", lease_s=30)

    def settle(self, delivery: Delivery) -> settle.Settlement:
        """Run one delivery's handler and build its settlement (retries are not used here)."""
        env = decode(delivery.body)
        task = self.stem.config.tasks[env.task]
        record = self.stem.backend.get(env.id)
        if record is not None and record.state in (TaskState.SUCCEEDED, TaskState.FAILED):
            return settle.skipped(delivery, env, "already terminal")
        self.calls.append((env.id, env.task, env.args))
        try:
            result = self.handlers[env.task](**env.args)
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc), "traceback": ""}
            return settle.give_up(delivery, env, task, error, self.stem.clock.now())
        outcome = Outcome(status="succeeded", result=result)
        return settle.succeeded(delivery, env, task, outcome, self.stem.clock.now())

    def step(self, *, crash_before_continuing: bool = False) -> int:
        """Settle everything fetchable in one batch; returns how many deliveries."""
        batch = [self.settle(d) for d in self.fetch()]
        if crash_before_continuing:
            transitions = [i.transition for i in batch if i.transition is not None]
            self.stem.backend.transition(transitions)
            self.stem.broker.extend([i.delivery for i in batch], 0.0)  # lease lapses at once
            return len(batch)
        settle.apply(self.stem.backend, self.stem.broker, batch, self.continuations.run)
        return len(batch)

    def drain(self) -> None:
        while self.step():
            pass


def previous_plus(suffix: str) -> Handler:
    return lambda previous=None, **kw: f"{previous or ''}{suffix}"


def test_a_chain_starts_with_its_first_step_carrying_the_rest(stem: Stem) -> None:
    chain_id = stem.canvas.chain(["a", ("b", {"x": 1}), Signature(task="c", queue="other")])
    [delivery] = Drive(stem, {}).fetch()
    env = decode(delivery.body)
    assert (env.id, env.task, env.root_id) == (f"{chain_id}.0", "a", chain_id)
    assert env.canvas is not None and env.canvas["kind"] == "chain"
    assert [s["task"] for s in env.canvas["rest"]] == ["b", "c"]
    record = stem.status(chain_id)
    assert record.state is TaskState.QUEUED and record.task == "chain"
    assert record.meta["members"] == [f"{chain_id}.{i}" for i in range(3)]


def test_a_chain_runs_in_order_passing_previous(stem: Stem) -> None:
    drive = Drive(stem, {"a": previous_plus("A"), "b": previous_plus("B"), "c": previous_plus("C")})
    chain_id = stem.canvas.chain(["a", "b", "c"])
    drive.drain()
    assert [task for _, task, _ in drive.calls] == ["a", "b", "c"]
    assert drive.calls[2][2] == {"previous": "AB"}
    final = stem.status(chain_id)
    assert final.state is TaskState.SUCCEEDED and final.result == "ABC"
    assert final.finished_at is not None and final.expires_at is not None


def test_a_failing_step_stops_the_chain_and_names_the_step(stem: Stem) -> None:
    def boom(previous: Any = None) -> None:
        raise ValueError("no profile")

    drive = Drive(stem, {"a": previous_plus("A"), "b": boom, "c": previous_plus("C")})
    chain_id = stem.canvas.chain(["a", "b", "c"])
    drive.drain()
    assert [task for _, task, _ in drive.calls] == ["a", "b"]
    final = stem.status(chain_id)
    assert final.state is TaskState.FAILED
    assert final.meta["failed_step"] == f"{chain_id}.1"
    assert final.error is not None and final.error["type"] == "ValueError"
    assert f"{chain_id}.1" in final.error["message"]
    assert stem.status(f"{chain_id}.2").state is TaskState.UNKNOWN


def test_a_crash_after_the_terminal_write_still_continues_once(stem: Stem) -> None:
    drive = Drive(stem, {"a": previous_plus("A"), "b": previous_plus("B")})
    chain_id = stem.canvas.chain(["a", "b"])
    drive.step(crash_before_continuing=True)  # step 0 succeeded, nothing enqueued, not acked
    assert stem.status(f"{chain_id}.1").state is TaskState.UNKNOWN
    drive.step()  # the redelivery finds it terminal: skipped, but the chain continues
    drive.step()
    drive.step()  # nothing left: a repeated continuation enqueued nothing twice
    assert [task for _, task, _ in drive.calls] == ["a", "b"]
    assert stem.status(chain_id).result == "AB"


def test_a_group_reports_results_in_member_order(stem: Stem) -> None:
    drive = Drive(stem, {"a": lambda n: n * 10})
    group_id = stem.canvas.group([("a", {"n": n}) for n in range(5)])
    drive.drain()
    final = stem.status(group_id)
    assert final.state is TaskState.SUCCEEDED and final.result == [0, 10, 20, 30, 40]
    view = stem.canvas.describe(final)
    assert view is not None
    assert (view["total"], view["completed"], view["succeeded"], view["failed"]) == (5, 5, 5, 0)


def test_a_chord_calls_back_once_with_ordered_results(stem: Stem) -> None:
    drive = Drive(stem, {"a": lambda n: n, "sum": lambda results: sum(results)})
    chord_id = stem.canvas.chord([("a", {"n": n}) for n in range(4)], "sum")
    batch = drive.fetch()
    # Members settle out of order, one per batch, and the last one is delivered twice.
    for delivery in reversed(batch):
        settle.apply(stem.backend, stem.broker, [drive.settle(delivery)], drive.continuations.run)
    drive.continuations.run([settle.skipped(batch[0], decode(batch[0].body), "again")])
    drive.drain()
    callbacks = [args for _, task, args in drive.calls if task == "sum"]
    assert callbacks == [{"results": [0, 1, 2, 3]}]
    final = stem.status(chord_id)
    assert final.state is TaskState.SUCCEEDED and final.result == 6


def test_a_failed_member_fails_the_chord_without_callback(stem: Stem) -> None:
    def member(n: int) -> int:
        if n == 2:
            raise ConnectionError("down")
        return n

    drive = Drive(stem, {"a": member, "sum": lambda results: sum(results)})
    chord_id = stem.canvas.chord([("a", {"n": n}) for n in range(4)], "sum")
    drive.drain()
    assert "sum" not in [task for _, task, _ in drive.calls]
    final = stem.status(chord_id)
    assert final.state is TaskState.FAILED and final.meta["failed_step"] == f"{chord_id}.2"
    view = stem.canvas.describe(final)
    assert view is not None and view["failed"] == 1 and view["callback"]["state"] == "pending"


def test_link_and_link_error_follow_a_single_task(stem: Stem) -> None:
    def b(previous: Any = None, error: Any = None, task_id: Any = None) -> Any:
        return previous if error is None else error["type"]

    def fails() -> None:
        raise KeyError("x")

    drive = Drive(stem, {"a": lambda: 7, "b": b, "c": fails})
    ok = stem.enqueue("a", link="b", link_error="c")
    bad = stem.enqueue("c", link="a", link_error="b")
    drive.drain()
    assert stem.status(f"{ok}.link").result == 7
    assert stem.status(f"{ok}.link_error").state is TaskState.UNKNOWN
    assert stem.status(f"{bad}.link_error").result == "KeyError"
    assert stem.status(f"{bad}.link").state is TaskState.UNKNOWN


def test_run_workflow_merges_args_and_names_the_record(stem: Stem) -> None:
    wf_id = stem.run_workflow("onboarding", args={"user": 7})
    fan_id = stem.run_workflow("fan", args={"user": 7})
    bodies = [decode(d.body) for d in Drive(stem, {}).fetch()]
    by_id = {env.id: env.args for env in bodies}
    assert by_id == {
        f"{wf_id}.0": {"k": 1, "user": 7},
        f"{fan_id}.0": {"k": 1, "user": 7},
        f"{fan_id}.1": {"user": 7},
    }
    record = stem.status(wf_id)
    assert record.task == "onboarding" and record.meta["workflow"] == "onboarding"
    assert record.args == {"user": 7}


def test_bad_canvases_publish_nothing(stem: Stem) -> None:
    with pytest.raises(UsageError, match="known: fan, onboarding, reduce"):
        stem.run_workflow("nope")
    with pytest.raises(TaskNotRegistered):
        stem.canvas.chain(["a", "missing"])
    with pytest.raises(UnknownQueue):
        stem.canvas.chord(["a"], Signature(task="sum", queue="nowhere"))
    with pytest.raises(UsageError, match="at least one"):
        stem.canvas.group([])
    with pytest.raises(TaskNotRegistered):
        stem.enqueue("a", link="missing")
    assert Drive(stem, {}).fetch() == []


def test_starting_the_same_canvas_id_twice_publishes_once(stem: Stem) -> None:
    stem.canvas.group(["a", "b"], canvas_id="g1")
    stem.canvas.group(["a", "b"], canvas_id="g1")
    assert len(Drive(stem, {}).fetch()) == 2


def test_with_args_targets_the_first_step_or_every_member() -> None:
    a, b = Signature(task="a", args={"k": 1}), Signature(task="b")
    assert with_args(Chain(steps=(a, b)), {"u": 1}) == Chain(steps=(a.merged({"u": 1}), b))
    chord = with_args(Chord(body=(a, b), callback=b), {"u": 1})
    assert isinstance(chord, Chord) and chord.callback == b
    assert [m.args for m in chord.body] == [{"k": 1, "u": 1}, {"u": 1}]
    group = first_steps(Group(members=(a, b)), "g")
    assert [(s.id, s.canvas) for s in group] == [
        ("g.0", {"kind": "group", "id": "g", "index": 0, "size": 2}),
        ("g.1", {"kind": "group", "id": "g", "index": 1, "size": 2}),
    ]


def test_from_config_keeps_the_declared_shape(stem: Stem) -> None:
    chord = from_config(stem.config.workflows["reduce"])
    assert chord == Chord(body=(Signature(task="a"),), callback=Signature(task="sum"))
