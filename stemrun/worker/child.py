"""Entry point of a process-pool child: `python -m stemrun.worker.child`.

The parent writes an `init` frame (task name -> handler path, import root, config path), then
one `run` frame per attempt on the child's stdin; the child answers on its stdout with `ready`,
then `progress` / `heartbeat` frames while a task runs and one `done` frame per attempt. The
protocol uses duplicated descriptors: anything a handler prints goes to stderr, never into the
pipe. SIGUSR1 is the soft time limit of the running attempt. SIGINT and SIGTERM are ignored (a
terminal or supervisor signals the whole process group, and the parent decides when its children
stop): end of stdin or a `stop` frame ends the child after its task; the parent uses SIGKILL.

`ctx.enqueue` in a child opens its own `Stem` client from the config file, on first use.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from stemrun.errors import SoftTimeLimitExceeded, TaskNotRegistered
from stemrun.registry import Handler, ensure_import_path, load_handler
from stemrun.worker.execute import SoftLimit, execute
from stemrun.worker.job import Job
from stemrun.worker.protocol import read_frame, write_frame


class ChildRuntime:
    """Runs attempts one at a time for the parent at the other end of the pipes."""

    def __init__(self, init: Mapping[str, Any], out: IO[bytes]) -> None:
        self._paths: dict[str, str] = dict(init["handlers"])
        self._config_path: str | None = init.get("config_path")
        self._out = out
        self._handlers: dict[str, Handler] = {}
        self._soft: SoftLimit | None = None
        self._stem: Any = None
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
        try:
            ctx = job.context(_PipeBridge(job.key, self))
            outcome = execute(lambda: self.load(job.task), ctx, job.args, soft, _raise_soft)
        finally:
            self._soft = None
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
        message = {"op": "progress", "key": self._key, "fraction": fraction, "meta": dict(meta)}
        self._runtime.send(message)

    def heartbeat(self) -> None:
        self._runtime.send({"op": "heartbeat", "key": self._key})

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
    signal.signal(signal.SIGUSR1, runtime.on_soft_limit)
    runtime.send({"op": "ready", "pid": os.getpid()})
    while (frame := read_frame(proto_in)) is not None:
        if frame.get("op") == "stop":
            break
        if frame.get("op") == "run":
            runtime.run(Job.from_frame(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
