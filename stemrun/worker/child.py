"""Entry point of a process-pool child: `python -m stemrun.worker.child`.

The parent writes an `init` frame (task name -> handler path, import root, config path), then
one `run` frame per attempt on the child's stdin; the child answers on its stdout with `ready`,
then `progress` / `heartbeat` frames while a task runs and one `done` frame per attempt. A
`cancel` frame may arrive while a task runs (a reader thread takes it at once): that attempt's
next ctx.progress()/heartbeat() raises TaskCancelled. The protocol uses duplicated descriptors:
anything a handler prints goes to stderr, never into the pipe. The child arms SIGALRM for the
soft time limit of the running attempt. SIGINT and SIGTERM are ignored (a terminal or
supervisor signals the whole process group, and the parent decides when its children stop): end
of stdin or a `stop` frame ends the child after its task; the parent uses SIGKILL.

`ctx.enqueue` in a child opens its own `Stem` client from the config file, on first use.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from stemrun.errors import SoftTimeLimitExceeded, TaskCancelled, TaskNotRegistered
from stemrun.registry import Handler, ensure_import_path, load_handler
from stemrun.worker.execute import SoftLimit, execute
from stemrun.worker.job import Job
from stemrun.worker.protocol import ProtocolError, read_frame, write_frame


class ChildRuntime:
    """Runs attempts one at a time for the parent at the other end of the pipes."""

    def __init__(self, init: Mapping[str, Any], out: IO[bytes]) -> None:
        self._paths: dict[str, str] = dict(init["handlers"])
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
        write_frame(self._out, message)

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


def main() -> int:
    """Serve the parent until it says stop or goes away."""
    # a terminal or supervisor signals the whole process group; the parent drains its children
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    proto_in, proto_out = _claim_pipes()
    init = read_frame(proto_in)
    if init is None or init.get("op") != "init":
        return 2
    runtime = ChildRuntime(init, proto_out)
    signal.signal(signal.SIGALRM, runtime.on_soft_limit)
    runtime.send({"op": "ready", "pid": os.getpid()})
    frames: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    # The reader inherits a mask blocking SIGALRM, so the kernel delivers the soft limit to the
    # main thread and interrupts the handler's blocking call (time.sleep) there.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    threading.Thread(target=_pump, args=(proto_in, runtime, frames), daemon=True).start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    while (frame := frames.get()) is not None:
        if frame.get("op") == "stop":
            break
        if frame.get("op") == "run":
            runtime.run(Job.from_frame(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
