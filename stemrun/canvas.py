"""Canvas: chain, group and chord as frozen dataclasses, compiled to a canvas record and steps.

A canvas run has an id and a status record under it (task: the workflow's name, else `chain`,
`group` or `chord`; `meta.canvas`: the kind; `meta.members`: the step ids), so `status` and `wait`
work on it. Steps get deterministic ids — `{id}.{index}` for chain steps and group/chord members,
`{id}.callback` for a chord's callback, `{task_id}.link` / `{task_id}.link_error` for links — so
enqueueing one twice publishes it once. Each step's envelope carries, in the signed `canvas` field
of its core, what a worker needs to continue after it (see stemrun.worker.continuation):

    {"kind": "chain", "id": ID, "index": i, "rest": [SIG, ...]}           chain step i
    {"kind": "group", "id": ID, "index": i, "size": n}                    group member
    {"kind": "chord", "id": ID, "index": i, "size": n, "callback": SIG}   chord member
    {"kind": "callback", "id": ID}                                        chord callback
    {"link": SIG, "link_error": SIG}                                      optional, on any task

where SIG is `Signature.to_dict()`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from stemrun.backends.base import ResultBackend
from stemrun.backends.record import StatusRecord
from stemrun.clock import Clock
from stemrun.config.model import Config, WorkflowConfig
from stemrun.enqueue import check_queue
from stemrun.errors import DecodeError, TaskNotRegistered, UsageError
from stemrun.state import TERMINAL, TaskState

Kind = Literal["chain", "group", "chord"]
#: Member state shown for a chain step that has not been enqueued yet.
PENDING = "pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """One task call inside a canvas: the task, its args and per-call options."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with only the options that are set."""
        data: dict[str, Any] = {"task": self.task, "args": self.args}
        if self.queue is not None:
            data["queue"] = self.queue
        if self.priority is not None:
            data["priority"] = self.priority
        if self.headers:
            data["headers"] = self.headers
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Rebuild from `to_dict()`. Raises DecodeError for a malformed dict."""
        try:
            return cls(
                task=str(data["task"]),
                args=dict(data.get("args") or {}),
                queue=data.get("queue"),
                priority=data.get("priority"),
                headers=dict(data.get("headers") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed canvas signature {data!r}: {exc!r}") from exc

    def merged(self, args: Mapping[str, Any]) -> Signature:
        """The same call with `args` merged over its own (the given ones win)."""
        return dataclasses.replace(self, args={**self.args, **args})


#: What the canvas API accepts for a step: a Signature, a task name, or (task, args).
SignatureLike = Signature | str | tuple[str, Mapping[str, Any]]


def signature(value: SignatureLike) -> Signature:
    """Normalise a step given as a Signature, a task name or a (task, args) pair."""
    if isinstance(value, Signature):
        return value
    if isinstance(value, str):
        return Signature(task=value)
    task, args = value
    return Signature(task=task, args=dict(args))


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    """Steps run one after the other; each receives the previous result as `previous`."""

    steps: tuple[Signature, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """Members run in parallel; the result is their results in order."""

    members: tuple[Signature, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Chord:
    """A group whose callback runs once every member succeeded, receiving `results`."""

    body: tuple[Signature, ...]
    callback: Signature


Workflow = Chain | Group | Chord


def from_config(config: WorkflowConfig) -> Workflow:
    """The canvas of a workflow declared in stem.yaml."""
    steps = tuple(Signature(task=s.task, args=dict(s.args)) for s in config.steps)
    if config.kind == "chain":
        return Chain(steps=steps)
    if config.kind == "group":
        return Group(members=steps)
    if config.callback is None:
        raise UsageError(f"workflow {config.name!r}: a chord needs a callback")
    return Chord(
        body=steps, callback=Signature(task=config.callback.task, args=config.callback.args)
    )


def with_args(workflow: Workflow, args: Mapping[str, Any]) -> Workflow:
    """Merge `args` into the first chain step, or into every group/chord body member."""
    if not args:
        return workflow
    if isinstance(workflow, Chain):
        first, *rest = workflow.steps
        return Chain(steps=(first.merged(args), *rest))
    if isinstance(workflow, Group):
        return Group(members=tuple(m.merged(args) for m in workflow.members))
    return dataclasses.replace(workflow, body=tuple(m.merged(args) for m in workflow.body))


def kind_of(workflow: Workflow) -> Kind:
    """`chain`, `group` or `chord`."""
    if isinstance(workflow, Chain):
        return "chain"
    return "group" if isinstance(workflow, Group) else "chord"


def signatures(workflow: Workflow) -> tuple[Signature, ...]:
    """Every call of the canvas, the chord callback last."""
    if isinstance(workflow, Chain):
        return workflow.steps
    if isinstance(workflow, Group):
        return workflow.members
    return (*workflow.body, workflow.callback)


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One task to enqueue for a canvas: its deterministic id, the call, lineage, canvas info."""

    id: str
    signature: Signature
    args: dict[str, Any]
    canvas: dict[str, Any] | None
    parent_id: str | None = None
    root_id: str | None = None


def member_ids(workflow: Workflow, canvas_id: str) -> list[str]:
    """The ids of the chain steps or body members, in order."""
    body = workflow.steps if isinstance(workflow, Chain) else signatures(workflow)
    count = len(body) - (1 if isinstance(workflow, Chord) else 0)
    return [f"{canvas_id}.{index}" for index in range(count)]


def callback_id(canvas_id: str) -> str:
    """The id of a chord's callback."""
    return f"{canvas_id}.callback"


def first_steps(workflow: Workflow, canvas_id: str) -> list[Step]:
    """What to enqueue to start the canvas: the first chain step, or every member."""
    ids = member_ids(workflow, canvas_id)
    if isinstance(workflow, Chain):
        info = chain_info(canvas_id, 0, workflow.steps[1:])
        return [step_of(ids[0], workflow.steps[0], info, canvas_id, canvas_id)]
    body = workflow.members if isinstance(workflow, Group) else workflow.body
    extra = {} if isinstance(workflow, Group) else {"callback": workflow.callback.to_dict()}
    kind = kind_of(workflow)
    return [
        step_of(
            ids[i],
            sig,
            {"kind": kind, "id": canvas_id, "index": i, "size": len(body), **extra},
            canvas_id,
            canvas_id,
        )
        for i, sig in enumerate(body)
    ]


def chain_info(canvas_id: str, index: int, rest: Sequence[Signature]) -> dict[str, Any]:
    """The canvas field of chain step `index`, carrying the steps after it."""
    return {"kind": "chain", "id": canvas_id, "index": index, "rest": [s.to_dict() for s in rest]}


def link_info(
    link: SignatureLike | None, link_error: SignatureLike | None
) -> dict[str, Any] | None:
    """The canvas field of a task with follow-ups, or None without any."""
    info = {}
    if link is not None:
        info["link"] = signature(link).to_dict()
    if link_error is not None:
        info["link_error"] = signature(link_error).to_dict()
    return info or None


def step_of(
    step_id: str,
    sig: Signature,
    info: dict[str, Any] | None,
    parent_id: str | None,
    root_id: str | None,
    extra: Mapping[str, Any] | None = None,
) -> Step:
    """A step calling `sig` with `extra` args merged over its own."""
    args = {**sig.args, **(extra or {})}
    return Step(
        id=step_id, signature=sig, args=args, canvas=info, parent_id=parent_id, root_id=root_id
    )


def canvas_record(
    workflow: Workflow, canvas_id: str, now: float, *, name: str | None, args: Mapping[str, Any]
) -> StatusRecord:
    """The status record standing for the whole canvas, `queued` until a step finishes."""
    kind = kind_of(workflow)
    meta: dict[str, Any] = {"canvas": kind, "members": member_ids(workflow, canvas_id)}
    if isinstance(workflow, Chord):
        meta["callback"] = callback_id(canvas_id)
    if name is not None:
        meta["workflow"] = name
    return StatusRecord(
        id=canvas_id,
        task=name or kind,
        state=TaskState.QUEUED,
        queue="",
        args=dict(args),
        created_at=now,
        meta=meta,
    )


def check(config: Config, calls: Sequence[Signature]) -> None:
    """Every call names a declared task and queue. Raises TaskNotRegistered or UnknownQueue."""
    for sig in calls:
        task = config.tasks.get(sig.task)
        if task is None:
            raise TaskNotRegistered(f"task {sig.task!r} is not declared in stem.yaml")
        check_queue(config, sig.queue or task.queue)


class Producer(Protocol):
    """What the canvas needs from a `Stem` (kept as a protocol so canvas never imports client)."""

    config: Config
    clock: Clock

    @property
    def backend(self) -> ResultBackend: ...

    def enqueue_steps(self, steps: Sequence[Step]) -> list[str]: ...


class Canvas:
    """Start chains, groups, chords and stem.yaml workflows, and report their progress.

    Reached as `stem.canvas`. Every step is published through `Stem.enqueue_many`, so signing
    and idempotent enqueue apply to canvas steps as to any task.
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def chain(self, steps: Sequence[SignatureLike], *, canvas_id: str | None = None) -> str:
        """Start a chain; returns its id. Raises UsageError (empty, undeclared task or queue)."""
        return self.run(Chain(steps=_calls(steps, "a chain")), canvas_id=canvas_id)

    def group(self, members: Sequence[SignatureLike], *, canvas_id: str | None = None) -> str:
        """Start a group; returns its id. Raises UsageError (empty, undeclared task or queue)."""
        return self.run(Group(members=_calls(members, "a group")), canvas_id=canvas_id)

    def chord(
        self,
        body: Sequence[SignatureLike],
        callback: SignatureLike,
        *,
        canvas_id: str | None = None,
    ) -> str:
        """Start a chord; returns its id. Raises UsageError (empty, undeclared task or queue)."""
        chord = Chord(body=_calls(body, "a chord body"), callback=signature(callback))
        return self.run(chord, canvas_id=canvas_id)

    def workflow(
        self, name: str, args: Mapping[str, Any] | None = None, *, canvas_id: str | None = None
    ) -> str:
        """Start a workflow declared in stem.yaml with `args` merged in; returns its id.

        Raises UsageError for an unknown name (listing the known ones) or bad args.
        """
        declared = self._producer.config.workflows.get(name)
        if declared is None:
            known = ", ".join(sorted(self._producer.config.workflows)) or "none declared"
            raise UsageError(f"workflow {name!r} is not declared in stem.yaml (known: {known})")
        if args is not None and not isinstance(args, Mapping):
            raise UsageError(f"workflow args must be a JSON object, got {type(args).__name__}")
        workflow = with_args(from_config(declared), args or {})
        return self.run(workflow, canvas_id=canvas_id, name=name, args=args or {})

    def run(
        self,
        workflow: Workflow,
        *,
        canvas_id: str | None = None,
        name: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> str:
        """Create the canvas record and enqueue its first steps; returns the canvas id.

        Starting an existing id again publishes nothing new (every step id is deterministic).
        Raises UsageError for undeclared tasks or queues (nothing written), BrokerError and
        BackendError when a store fails (the new canvas record is removed again).
        """
        check(self._producer.config, signatures(workflow))
        cid = canvas_id or uuid.uuid4().hex
        record = canvas_record(
            workflow, cid, self._producer.clock.now(), name=name, args=args or {}
        )
        backend = self._producer.backend
        created = backend.create([record])[0]
        try:
            self._producer.enqueue_steps(first_steps(workflow, cid))
        except BaseException:
            if created:
                backend.delete([cid])
            raise
        return cid

    def describe(self, record: StatusRecord) -> dict[str, Any] | None:
        """Members' states and counts of a canvas record; None for a plain task's record."""
        kind = record.meta.get("canvas")
        if kind not in ("chain", "group", "chord"):
            return None
        members = [self._member(str(i)) for i in record.meta.get("members") or []]
        states = [m["state"] for m in members]
        done = {str(s) for s in TERMINAL}
        out: dict[str, Any] = {
            "kind": kind,
            "members": members,
            "total": len(members),
            "completed": sum(s in done for s in states),
            "succeeded": states.count(str(TaskState.SUCCEEDED)),
            "failed": sum(s in done and s != str(TaskState.SUCCEEDED) for s in states),
        }
        if kind == "chord":
            out["callback"] = self._member(str(record.meta.get("callback")))
        return out

    def _member(self, task_id: str) -> dict[str, Any]:
        found = self._producer.backend.get(task_id)
        if found is None:
            return {"id": task_id, "task": None, "state": PENDING}
        return {"id": task_id, "task": found.task, "state": str(found.state)}


def _calls(items: Sequence[SignatureLike], what: str) -> tuple[Signature, ...]:
    calls = tuple(signature(item) for item in items)
    if not calls:
        raise UsageError(f"{what} needs at least one step")
    return calls
