"""The process pool: `concurrency` reusable child processes, one attempt at a time each.

Children are `python -m stemrun.worker.child` started with subprocess and spoken to with JSON
frames over their stdin/stdout (see `protocol`); nothing is pickled. A reader thread per child
turns its frames into consumer events. Soft limit: the child arms SIGALRM itself when it starts
the attempt. Hard limit: SIGKILL, the attempt fails with HardTimeLimitExceeded and a fresh child
takes the slot. A child that dies on its own fails its attempt with `WorkerLostError` (normal
retry rules apply).

Each child runs in a session of its own, so its process group holds the child and the processes
its tasks start (unless they leave them). Every end of a child ends its group: SIGKILL to the
group on a hard limit and a forced stop, and once a child exited (recycled, stopped, crashed),
SIGKILL to what its tasks left in the group. Its reader thread reaps it, and nothing signals its
group after that.

Children never outlive the worker (see child.py): each is told the worker's pid, and on Linux
asks the kernel to SIGKILL it when the thread that spawned it exits. So children are spawned only
by the thread running the pool (`start` and `maintain`, the worker loop), which outlives them:
`close` waits until they are reaped before that thread returns. The groups of the children of a
worker that died are killed by the pool's group keeper (group_keeper.py).
"""

from __future__ import annotations

import logging
import os
import signal
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


class _GroupKeeper:
    """The keeper process that kills the children's groups if the worker dies (group_keeper.py)."""

    def __init__(self) -> None:
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "stemrun.worker.group_keeper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # a signal to the worker's process group must not reach it
        )
        assert self._popen.stdin is not None
        self._stdin: IO[bytes] = self._popen.stdin
        self._lock = threading.Lock()  # the spawning thread and the reader threads write

    def keep(self, pid: int) -> None:
        self._tell(f"+{pid}\n")

    def forget(self, pid: int) -> None:
        self._tell(f"-{pid}\n")

    def _tell(self, line: str) -> None:
        with self._lock:
            try:
                self._stdin.write(line.encode())
                self._stdin.flush()
            except (OSError, ValueError):  # it died or was closed: the worker ends its groups
                pass

    def close(self) -> None:
        """Let it go: it kills any group still listed (none after a clean close) and exits."""
        with self._lock:
            try:
                self._stdin.close()
            except OSError:
                pass
        try:
            self._popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


class _Child:
    """One child process and the attempt it is running (guarded by `lock`)."""

    def __init__(self, init: Mapping[str, Any], keeper: _GroupKeeper) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "stemrun.worker.child", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,  # a process group for it and its tasks' processes
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
        self.reaped = threading.Event()  # set by the reader thread, the one that reaps it
        self._keeper = keeper
        keeper.keep(self.popen.pid)
        self.send(dict(init))

    def send(self, message: dict[str, Any]) -> bool:
        try:
            write_frame(self.stdin, message)
        except (OSError, ValueError):  # a closed pipe: the child is gone
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the child's process group: the child and every process its tasks started."""
        if not self.reaped.is_set():  # else its pid may name another process by now
            self._kill_group()

    def reap(self) -> int:
        """Once the child's stdout ended: wait for its exit, then kill what its tasks left."""
        code = self.popen.wait()
        # The child finished exiting (its output flushed, its atexit run) before this: only its
        # tasks' processes are left, and while any is, no new process can take its pid.
        self._kill_group()
        self._keeper.forget(self.popen.pid)
        self.reaped.set()
        return code

    def _kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group

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
        self._keeper: _GroupKeeper | None = None

    def start(self) -> None:
        self._spawner = threading.get_ident()
        self._keeper = _GroupKeeper()
        self._children = [self._spawn() for _ in range(self._concurrency)]

    def _spawn(self) -> _Child:
        # a child spawned by a shorter-lived thread would be killed when that thread ends
        assert threading.get_ident() == self._spawner, "children spawn on the pool's thread"
        assert self._keeper is not None, "start() runs first"
        child = _Child(self._init, self._keeper)
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
            child.kill()
        code = child.reap()  # the end of its stdout: the child exited
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
        self._retired = [child for child in self._retired if not child.reaped.is_set()]

    def _kill(self, child: _Child, entry: Running) -> None:
        with child.lock:
            if child.job is not entry:
                return
            child.job = None
            child.dead = True
            entry.hard_fired = True
        child.kill()
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
        """Stop every child (after its task when `graceful`), and what its tasks left running."""
        self._closing = True
        for child in self._children:
            if graceful:
                child.send({"op": "stop"})
            else:
                child.kill()
        for child in [*self._children, *self._retired]:
            if not child.reaped.wait(5.0 if graceful else 1.0):
                child.kill()
                if not child.reaped.wait(5.0):
                    log.error("pool child %s did not end after SIGKILL", child.popen.pid)
            try:
                child.stdin.close()  # stdout belongs to the reader thread, which sees its end
            except OSError:
                pass
        if self._keeper is not None:
            self._keeper.close()

    def cancel(self, key: str) -> None:
        """Tell the child running `key` over its pipe; its next ctx call raises TaskCancelled."""
        for child in self._children:
            entry = child.job
            if entry is not None and entry.job.key == key:
                child.send({"op": "cancel", "key": key})
