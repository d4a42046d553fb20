"""Entry point of a process-pool child: `python -m stemrun.worker.child`.

The parent writes an `init` frame (task name -> handler path, import root, config path), then
one `run` frame per attempt on the child's stdin; the child answers on its stdout with `ready`,
then `progress` / `heartbeat` frames while a task runs and one `done` frame per attempt. A
`cancel` frame may arrive while a task runs (a reader thread takes it at once): that attempt's
next ctx.progress()/heartbeat() raises TaskCancelled. The protocol uses duplicated descriptors:
anything a handler prints goes to stderr, never into the pipe. The child arms SIGALRM for the
soft time limit of the running attempt. SIGINT and SIGTERM are ignored (the parent decides when
its children stop; in their own sessions, a terminal's or supervisor's signals to the worker's
process group do not reach them anyway): a `stop` frame ends the child after its task; the parent
uses SIGKILL.

A child never outlives its worker (docs/workers.md): a task that ran on after the worker died
would finish unrecorded and run again when its delivery is redelivered. The worker passes its pid
as the only argument; on Linux the kernel SIGKILLs the child when the worker dies, and on every
platform a watch thread exits the child within `PARENT_WATCH_S` once its parent pid changes, as
does the end of stdin (only a dead worker closes it under a live child) or a failed write to the
worker. Such an exit is silent: there is nobody left to tell.

Nor do the processes its tasks start outlive the child: the worker starts it in a session, so a
process group, of its own, which those processes join unless they leave it, and kills the group
whenever it ends the child; the pool's group keeper (group_keeper.py) kills it when the worker
dies. A child that finds its worker gone kills its own group as it exits.

`ctx.enqueue` in a child opens its own `Stem` client from the config file, on first use.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from stemrun.errors import SoftTimeLimitExceeded, TaskCancelled, TaskNotRegistered
from stemrun.registry import Handler, ensure_import_path, load_handler
from stemrun.worker.execute import SoftLimit, execute
from stemrun.worker.job import Job
from stemrun.worker.protocol import ProtocolError, read_frame, write_frame

#: How often the watch thread compares the parent pid with the worker's.
PARENT_WATCH_S = 0.1
#: Exit status of a child whose worker is gone (nobody is left to read it).
ORPHANED_EXIT = 3
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ChildRuntime:
    """Runs attempts one at a time for the parent at the other end of the pipes."""

    def __init__(self, init: Mapping[str, Any], out: IO[bytes]) -> None:
        self._paths: dict[str, str] = dict(init["handlers"])
        self._preload: list[str] = list(init.get("preload", []))
        self._config_path: str | None = init.get("config_path")
        self._out = out
        self._handlers: dict[str, Handler] = {}
        self._soft: SoftLimit | None = None
        self._stem: Any = None
        self.cancelled: set[str] = set()  # written by the reader thread, read by the bridge
        ensure_import_path(Path(init["root_dir"]))

    def load(self, task: str) -> Handler:
        handler = self._handlers.get(task)
        if handler is None:
            if task not in self._paths:
                raise TaskNotRegistered(f"task {task!r} is not declared in stem.yaml")
            handler = self._handlers[task] = load_handler(self._paths[task])
        return handler

    def preload(self) -> None:
        """Import the handlers of the tasks routed to the worker's queues before saying
        `ready`, so a task starts the moment it arrives.

        A rate-limited start is measured when its handler begins (docs/flow-control.md). A
        handler that fails to import fails its tasks when they run, as without the preload.
        """
        for task in self._preload:
            try:
                self.load(task)
            except BaseException:  # even SystemExit: the task that runs it reports it
                continue

    def on_soft_limit(self, signum: int, frame: FrameType | None) -> None:
        soft = self._soft
        if soft is not None:
            soft.fire()

    def run(self, job: Job) -> None:
        soft = SoftLimit()
        self._soft = soft
        # The child times its own soft limit from the moment it really starts the attempt: a
        # signal from the parent could arrive while the job frame is still in the pipe, and be
        # lost. SIGALRM lands on this (main) thread and interrupts blocking calls here.
        if job.soft_limit_s:
            signal.setitimer(signal.ITIMER_REAL, job.soft_limit_s)
        try:
            ctx = job.context(_PipeBridge(job.key, self))
            outcome = execute(lambda: self.load(job.task), ctx, job.args, soft, _raise_soft)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._soft = None
            self.cancelled.discard(job.key)
        self.send({"op": "done", "key": job.key, "outcome": outcome.to_dict()})

    def send(self, message: dict[str, Any]) -> None:
        """Write one frame to the worker; exits quietly when the worker is gone.

        Raises TypeError/ValueError when `message` is not JSON (the handler's progress meta).
        """
        try:
            write_frame(self._out, message)
        except OSError:  # BrokenPipeError: the worker died; its task must not run on
            _orphaned()

    def enqueue(self, task: str, args: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
        if self._stem is None:
            from stemrun.client import Stem

            self._stem = Stem.from_config(self._config_path)
        task_id: str = self._stem.enqueue(task, dict(args) if args else None, **options)
        return task_id


class _PipeBridge:
    def __init__(self, key: str, runtime: ChildRuntime) -> None:
        self._key = key
        self._runtime = runtime

    def progress(self, fraction: float | None, meta: Mapping[str, Any]) -> None:
        self._check_cancelled()
        message = {"op": "progress", "key": self._key, "fraction": fraction, "meta": dict(meta)}
        self._runtime.send(message)

    def heartbeat(self) -> None:
        self._check_cancelled()
        self._runtime.send({"op": "heartbeat", "key": self._key})

    def _check_cancelled(self) -> None:
        if self._key in self._runtime.cancelled:
            raise TaskCancelled("cancelled by stemrun cancel")

    def enqueue(self, task: str, args: Mapping[str, Any] | None, options: dict[str, Any]) -> str:
        return self._runtime.enqueue(task, args, options)


def _raise_soft() -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _claim_pipes() -> tuple[IO[bytes], IO[bytes]]:
    """Keep stdin/stdout for the protocol; point fd 0 at /dev/null and fd 1 at stderr."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def _pump(
    proto_in: IO[bytes], runtime: ChildRuntime, frames: queue.SimpleQueue[dict[str, Any] | None]
) -> None:
    """Read the parent's frames while a task runs: `cancel` applies at once, the rest queue."""
    try:
        while (frame := read_frame(proto_in)) is not None:
            if frame.get("op") == "cancel":
                runtime.cancelled.add(str(frame.get("key")))
            else:
                frames.put(frame)
    except (ProtocolError, OSError, ValueError) as exc:
        sys.stderr.write(f"stemrun pool child: bad frame from the worker: {exc}\n")
        frames.put(None)
        return
    _orphaned()  # the worker closes stdin only after its child exited: it died


def _orphaned() -> None:
    """Exit at once, without cleanup or traceback: the worker that would record the task is gone.

    The processes the task started go too: SIGKILL to the child's own process group, this child
    included, is the last thing it does.
    """
    if _leads_own_group():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(ORPHANED_EXIT)


def _leads_own_group() -> bool:
    """Whether this child leads its process group (the pool starts it in a session of its own).

    Started otherwise (by hand, in a pipeline), its group may hold processes not its own.
    """
    return os.getpgrp() == os.getpid()


def _die_with_parent(parent: int) -> None:
    """Make sure this child cannot outlive `parent`, the worker that started it.

    The kernel's parent-death signal fires when the worker's thread that spawned the child exits;
    the pool spawns from the thread running the worker loop, which reaps its children before it
    ends (see pool_process.py).
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # if it fails (a sandbox forbids prctl) the watch thread still ends the child
        libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL))
    if os.getppid() != parent:  # the worker died before the signal was armed
        _orphaned()
    _start_helper(_watch_parent, parent)


def _watch_parent(parent: int) -> None:
    """Exit once this process is reparented: its worker died (any platform, any signal)."""
    while os.getppid() == parent:
        time.sleep(PARENT_WATCH_S)
    _orphaned()


def _start_helper(target: Callable[..., None], *args: Any) -> None:
    """Start a daemon thread that never takes SIGALRM.

    Blocking SIGALRM in every helper makes the kernel deliver the soft limit to the main thread,
    where it interrupts the handler's blocking call (time.sleep); threads inherit the mask.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        threading.Thread(target=target, args=args, daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def _expected_parent() -> int:
    """The worker's pid, passed as the only argument (the current parent when run by hand)."""
    return int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()


def main() -> int:
    """Serve the parent until it says stop or goes away."""
    # only the parent decides when its children stop (see the module docstring)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(_expected_parent())
    proto_in, proto_out = _claim_pipes()
    init = read_frame(proto_in)
    if init is None or init.get("op") != "init":
        return 2
    runtime = ChildRuntime(init, proto_out)
    signal.signal(signal.SIGALRM, runtime.on_soft_limit)
    runtime.preload()
    runtime.send({"op": "ready", "pid": os.getpid()})
    frames: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    _start_helper(_pump, proto_in, runtime, frames)
    while (frame := frames.get()) is not None:
        if frame.get("op") == "stop":
            break
        if frame.get("op") == "run":
            runtime.run(Job.from_frame(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
