"""What a worker does after a canvas step's terminal status is written, before the step is acked.

The next chain step, the chord counter and callback, `link` / `link_error` follow-ups and the
canvas record's state. It reads the step's *stored* record rather than trusting the local
outcome, so it behaves the same whether this worker just wrote the result, lost the write to
another owner, or is handling a redelivery of a step whose status was already terminal (the
worker crashed after the write and before continuing). Everything is idempotent: follow-up ids
are deterministic and enqueued through `Stem.enqueue_many` (an existing id is not published
again), the chord counter counts a member index once, and canvas record writes are fenced (the
first terminal state wins). A repeated batch therefore changes nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stemrun import canvas
from stemrun.backends.base import Chords, ResultBackend
from stemrun.backends.record import StatusRecord, Transition
from stemrun.brokers.base import Broker
from stemrun.client import Stem
from stemrun.clock import Clock
from stemrun.config.model import Config
from stemrun.envelope import Envelope
from stemrun.errors import BackendError, BrokerError, DecodeError, StemrunError
from stemrun.state import TERMINAL, TaskState
from stemrun.worker.settle import Settlement

log = logging.getLogger("stemrun.worker")

#: Canvas ids this process already marked running; bounded so a long-lived worker stays small.
MARKED_LIMIT = 10_000


@dataclass(slots=True)
class _Plan:
    """What one step's continuation writes: steps to enqueue, canvas record transitions."""

    steps: list[canvas.Step] = field(default_factory=list)
    marks: list[Transition] = field(default_factory=list)


class Continuations:
    """Continues canvases after settled steps; `run` is the hook of `settle.apply`."""

    def __init__(
        self, config: Config, broker: Broker, backend: ResultBackend, chords: Chords, clock: Clock
    ) -> None:
        self._config = config
        self._broker = broker
        self._backend = backend
        self._chords = chords
        self._clock = clock
        self._stem: Stem | None = None
        self._marked: set[str] = set()

    def run(self, batch: Sequence[Settlement]) -> None:
        """Continue after every canvas step of `batch` whose stored status is terminal.

        Raises BackendError / BrokerError; the caller applies the batch again later.
        """
        marks: list[Transition] = []
        for item in batch:
            envelope = item.envelope
            if envelope is None or not envelope.canvas or item.action == "requeue":
                continue
            record = self._backend.get(envelope.id)
            if record is None or record.state not in TERMINAL:
                continue
            marks.extend(self._follow(envelope, envelope.canvas, record))
        if marks:
            self._backend.transition(marks)

    def _client(self) -> Stem:
        # The worker's own store handles, used only from the loop thread; never closed here.
        if self._stem is None:
            self._stem = Stem(
                self._config, broker=self._broker, backend=self._backend, clock=self._clock
            )
        return self._stem

    def _follow(
        self, envelope: Envelope, info: Mapping[str, Any], record: StatusRecord
    ) -> list[Transition]:
        plan = _Plan()
        try:
            if record.state is TaskState.SUCCEEDED:
                self._succeeded(envelope, info, record, plan)
            else:
                self._failed(envelope, info, record, plan)
            if plan.steps:
                self._client().enqueue_steps(plan.steps)
        except (BackendError, BrokerError):
            raise
        except StemrunError as exc:
            # A follow-up this worker cannot publish (undeclared here, cannot sign, malformed
            # info): retrying would fail the same way, so the canvas fails and says why.
            log.error("canvas step %s: cannot continue: %s", envelope.id, exc)
            if not isinstance(info.get("id"), str):
                return []  # a plain task's link: there is no canvas record to fail
            error = {"type": type(exc).__name__, "message": str(exc), "traceback": ""}
            return [self._finish(info, TaskState.FAILED, error=error, failed_step=envelope.id)]
        return plan.marks

    def _succeeded(
        self, envelope: Envelope, info: Mapping[str, Any], record: StatusRecord, plan: _Plan
    ) -> None:
        link = _link_step(info, "link", envelope.id, envelope.root_id, {"previous": record.result})
        if link is not None:
            plan.steps.append(link)
        kind = info.get("kind")
        if kind == "chain":
            nxt = _next_chain_step(info, envelope.id, record.result)
            if nxt is None:
                plan.marks.append(self._finish(info, TaskState.SUCCEEDED, result=record.result))
            else:
                plan.steps.append(nxt)
                self._mark_running(info, plan)
        elif kind in ("group", "chord"):
            self._member_done(info, record.result, plan)
        elif kind == "callback":
            plan.marks.append(self._finish(info, TaskState.SUCCEEDED, result=record.result))

    def _member_done(self, info: Mapping[str, Any], result: Any, plan: _Plan) -> None:
        canvas_id, index = _field(info, "id", str), _field(info, "index", int)
        size = _field(info, "size", int)
        try:
            results = self._chords.chord_add(canvas_id, index, result, size)
        except ValueError as exc:
            raise DecodeError(f"canvas {canvas_id}: {exc}") from exc
        if results is not None and info.get("kind") == "group":
            plan.marks.append(self._finish(info, TaskState.SUCCEEDED, result=results))
            return
        if results is not None:
            plan.steps.append(_callback_step(info, results))
        self._mark_running(info, plan)

    def _failed(
        self, envelope: Envelope, info: Mapping[str, Any], record: StatusRecord, plan: _Plan
    ) -> None:
        extra = {"error": record.error, "task_id": envelope.id}
        follow_up = _link_step(info, "link_error", envelope.id, envelope.root_id, extra)
        if follow_up is not None:
            plan.steps.append(follow_up)
        if info.get("kind") in ("chain", "group", "chord", "callback"):
            state = TaskState.FAILED if record.state is TaskState.FAILED else TaskState.CANCELLED
            error = _step_error(envelope, record)
            plan.marks.append(self._finish(info, state, error=error, failed_step=envelope.id))

    def _mark_running(self, info: Mapping[str, Any], plan: _Plan) -> None:
        canvas_id = str(info.get("id"))
        if canvas_id in self._marked:
            return
        if len(self._marked) >= MARKED_LIMIT:
            self._marked.clear()
        self._marked.add(canvas_id)
        plan.marks.append(
            Transition(task_id=canvas_id, attempt=0, state=TaskState.RUNNING, changes={})
        )

    def _finish(
        self,
        info: Mapping[str, Any],
        state: TaskState,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        failed_step: str | None = None,
    ) -> Transition:
        now = self._clock.now()
        changes: dict[str, Any] = {
            "result": result,
            "error": error,
            "finished_at": now,
            "expires_at": now + self._config.result_ttl_s,
        }
        if failed_step is not None:
            changes["meta"] = {"failed_step": failed_step}
        canvas_id = str(info.get("id"))
        self._marked.discard(canvas_id)
        return Transition(task_id=canvas_id, attempt=0, state=state, changes=changes)


def _step_error(envelope: Envelope, record: StatusRecord) -> dict[str, Any]:
    """The canvas's error: the failing step's, with a message naming the step."""
    error = record.error or {}
    reason = error.get("message") or record.meta.get("reason") or str(record.state)
    return {
        "type": error.get("type") or "Cancelled",
        "message": f"step {envelope.id} ({envelope.task}) {record.state}: {reason}",
        "traceback": error.get("traceback") or "",
    }


# -- reading the canvas field (format: stemrun.canvas) -----------------------------------


def _next_chain_step(info: Mapping[str, Any], step_id: str, previous: Any) -> canvas.Step | None:
    """The chain step after the one described by `info`, or None after the last one.

    Raises DecodeError for malformed info.
    """
    rest = [canvas.Signature.from_dict(s) for s in _field(info, "rest", list)]
    if not rest:
        return None
    canvas_id, index = _field(info, "id", str), _field(info, "index", int) + 1
    return canvas.step_of(
        f"{canvas_id}.{index}",
        rest[0],
        canvas.chain_info(canvas_id, index, rest[1:]),
        step_id,
        canvas_id,
        {"previous": previous},
    )


def _callback_step(info: Mapping[str, Any], results: list[Any]) -> canvas.Step:
    """The chord callback, receiving the members' `results`. Raises DecodeError."""
    canvas_id = _field(info, "id", str)
    sig = canvas.Signature.from_dict(_field(info, "callback", dict))
    info_out = {"kind": "callback", "id": canvas_id}
    return canvas.step_of(
        canvas.callback_id(canvas_id), sig, info_out, canvas_id, canvas_id, {"results": results}
    )


def _link_step(
    info: Mapping[str, Any], which: str, task_id: str, root_id: str | None, extra: dict[str, Any]
) -> canvas.Step | None:
    """The `link` or `link_error` follow-up of task `task_id`, if it has one."""
    data = info.get(which)
    if data is None:
        return None
    sig = canvas.Signature.from_dict(_field(info, which, dict))
    return canvas.step_of(f"{task_id}.{which}", sig, None, task_id, root_id or task_id, extra)


def _field(info: Mapping[str, Any], key: str, kind: type) -> Any:
    value = info.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"canvas info has no valid {key!r}: {dict(info)!r}")
    return value
