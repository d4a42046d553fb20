"""The process pool: `concurrency` reusable child processes, one attempt at a time each.

Children are `python -m stemrun.worker.child` started with subprocess and spoken to with JSON
frames over their stdin/stdout (see `protocol`); nothing is pickled. A reader thread per child
turns its frames into consumer events. Soft limit: the child arms SIGALRM itself when it starts
the attempt. Hard limit: SIGKILL,
the attempt fails with HardTimeLimitExceeded and a fresh child takes the slot. A child that dies
on its own fails its attempt with `WorkerLostError` (normal retry rules apply).

Children never outlive the worker (see child.py): each is told the worker's pid, and on Linux
asks the kernel to SIGKILL it when the thread that spawned it exits. So children are spawned only
by the thread running the pool (`start` and `maintain`, the worker loop), which outlives them:
`close` reaps them before that thread returns.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from stemrun.worker.execute import Outcome, failure
from stemrun.worker.job import Beat, Done, Emit, Job, Progress
from stemrun.worker.pool import Running, hard_limit_outcome
from stemrun.worker.protocol import ProtocolError, read_frame, write_frame

log = logging.getLogger("stemrun.worker")

LOST_ERROR = "WorkerLostError"


class _Child:
    """One child process and the attempt it is running (guarded by `lock`)."""

    def __init__(self, init: Mapping[str, Any]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "stemrun.worker.child", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.stdin: IO[bytes] = self.popen.stdin
        self.stdout: IO[bytes] = self.popen.stdout
        self.lock = threading.Lock()
        self.job: Running | None = None
        self.ready = False
        self.dead = False
        self.retiring = False
        self.tasks = 0
        self.send(dict(init))

    def send(self, message: dict[str, Any]) -> bool:
        try:
            write_frame(self.stdin, message)
        except (OSError, ValueError):  # a closed pipe: the child is gone
            return False
        return True

    def idle(self) -> bool:
        # Only a child that said `ready` (booted, handlers imported) starts a task the moment it
        # is handed one: a rate-limited start must not wait in the pipe (docs/flow-control.md).
        return self.ready and self.job is None and not self.dead and not self.retiring


class ProcessPool:
    """Child processes running handlers; see the module docstring."""

    def __init__(
        self, concurrency: int, init: Mapping[str, Any], emit: Emit, max_tasks: int | None
    ) -> None:
        self._concurrency = concurrency
        self._init = {"op": "init", **init}
        self._emit = emit
        self._max_tasks = max_tasks
        self._children: list[_Child] = []
        self._retired: list[_Child] = []
        self._closing = False
        self._spawner: int | None = None  # the thread that spawns children (see module doc)

    def start(self) -> None:
        self._spawner = threading.get_ident()
        self._children = [self._spawn() for _ in range(self._concurrency)]

    def _spawn(self) -> _Child:
        # a child spawned by a shorter-lived thread would be killed when that thread ends
        assert threading.get_ident() == self._spawner, "children spawn on the pool's thread"
        child = _Child(self._init)
        threading.Thread(
            target=self._read, args=(child,), name="stemrun-child", daemon=True
        ).start()
        return child

    def free_slots(self) -> int:
        return sum(1 for child in self._children if child.idle())

    def running(self) -> int:
        return sum(1 for child in self._children if child.job is not None)

    def submit(self, job: Job) -> None:
        child = next(child for child in self._children if child.idle())
        entry = Running(job)  # the child times the soft limit itself (see child.py)
        with child.lock:
            child.job = entry
        if not child.send(job.to_frame()):
            self._lost(child, "its pipe closed")

    def _read(self, child: _Child) -> None:
        try:
            while (frame := read_frame(child.stdout)) is not None:
                self._on_frame(child, frame)
        except (ProtocolError, OSError, ValueError) as exc:
            log.error("pool child %s sent a bad frame: %s", child.popen.pid, exc)
            child.popen.kill()
        code = child.popen.wait()
        self._lost(child, f"it exited with code {code}")

    def _on_frame(self, child: _Child, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "done":
            self._done(child, str(frame["key"]), Outcome.from_dict(frame["outcome"]))
        elif op == "progress":
            self._emit(Progress(str(frame["key"]), frame.get("fraction"), frame.get("meta") or {}))
        elif op == "heartbeat":
            self._emit(Beat(str(frame["key"])))
        elif op == "ready":
            child.ready = True

    def _done(self, child: _Child, key: str, outcome: Outcome) -> None:
        with child.lock:
            entry = child.job
            if entry is None or entry.job.key != key:
                return  # killed by its hard limit meanwhile: the late result is ignored
            child.job = None
            child.tasks += 1
            if self._max_tasks is not None and child.tasks >= self._max_tasks:
                child.retiring = True
        self._emit(Done(key, outcome))

    def _lost(self, child: _Child, why: str) -> None:
        with child.lock:
            entry, child.job = child.job, None
            child.dead = True
        if entry is not None and not self._closing:
            message = f"the pool child running task {entry.job.task!r} died: {why}"
            self._emit(Done(entry.job.key, failure(LOST_ERROR, message)))

    def maintain(self) -> None:
        now = Running.now()
        for child in self._children:
            entry = child.job
            if entry is None:
                continue
            if entry.hard_due(now):
                self._kill(child, entry)
        if not self._closing:
            self._replace()
        self._retired = [child for child in self._retired if child.popen.poll() is None]

    def _kill(self, child: _Child, entry: Running) -> None:
        with child.lock:
            if child.job is not entry:
                return
            child.job = None
            child.dead = True
            entry.hard_fired = True
        child.popen.kill()
        self._emit(Done(entry.job.key, hard_limit_outcome(entry.job)))

    def _replace(self) -> None:
        for index, child in enumerate(self._children):
            if child.retiring and child.job is None and not child.dead:
                child.send({"op": "stop"})
                self._retired.append(child)
            elif not child.dead:
                continue
            self._children[index] = self._spawn()

    def close(self, *, graceful: bool) -> None:
        self._closing = True
        for child in self._children:
            if graceful:
                child.send({"op": "stop"})
            else:
                child.popen.kill()
        for child in [*self._children, *self._retired]:
            try:
                child.popen.wait(timeout=5.0 if graceful else 1.0)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait()
            try:
                child.stdin.close()  # stdout belongs to the reader thread, which sees its end
            except OSError:
                pass

    def cancel(self, key: str) -> None:
        """Tell the child running `key` over its pipe; its next ctx call raises TaskCancelled."""
        for child in self._children:
            entry = child.job
            if entry is not None and entry.job.key == key:
                child.send({"op": "cancel", "key": key})
