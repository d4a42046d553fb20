"""The child processes: the command line of each, spawning, and the ways each is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stemrun.metrics import METRICS_SERVER_ENV
from stemrun.supervision import SUPERVISOR_PID_ENV
from stemrun.supervisor.generation import ChildSpec

FORCE_GRACE_S = 5.0  # after its forced stop, how long a child may take to exit before SIGKILL


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """How every child is started: interpreter, host name, log overrides."""

    host: str
    python: str = sys.executable
    log_level: str | None = None
    log_format: str | None = None

    def name(self, spec: ChildSpec, generation: int) -> str:
        """The worker name; a child started by reload N carries `.gN` so names stay unique.

        A replacement runs beside the child it replaces while that one drains, and two live
        workers must never share a name (heartbeats and broker consumers are keyed by it).
        """
        base = f"{self.host}.{spec.group or 'default'}.{spec.index}"
        if spec.kind == "beat":
            base = f"{self.host}.beat"
        return base if generation <= 1 else f"{base}.g{generation}"

    def argv(self, spec: ChildSpec, name: str, config_file: Path) -> list[str]:
        """`python -m stemrun worker|beat -C <config_file> ...` for one child."""
        argv = [self.python, "-m", "stemrun", spec.kind, "-C", str(config_file)]
        if spec.kind == "worker" and spec.group is not None:
            argv += ["--group", spec.group]
        argv += ["-n", name]
        if self.log_level:
            argv += ["--log-level", self.log_level]
        if self.log_format:
            argv += ["--log-format", self.log_format]
        return argv


class Child:
    """One running child process and what the supervisor asked of it."""

    def __init__(
        self,
        spec: ChildSpec,
        name: str,
        config_file: Path,
        proc: subprocess.Popen[bytes],
        now: float,
    ) -> None:
        self.spec = spec
        self.name = name
        self.config_file = config_file  # the validated copy it loaded
        self.started_at = now
        self.stopping = False  # a graceful stop (SIGTERM) was sent: its exit is expected
        self._proc = proc
        self._deadline: float | None = None  # a bounded stop is forced past this
        self._kill_at: float | None = None  # set once forced: SIGKILL past this

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit code once the child has exited, else None."""
        return self._proc.poll()

    def drain(self) -> None:
        """SIGTERM: a worker stops fetching, finishes in-flight tasks, acks and exits 0.

        Sent once: a second SIGTERM would force the child's stop (see `enforce`).
        """
        if self.stopping:
            return
        self.stopping = True
        self._signal(self._proc.pid, signal.SIGTERM, group=False)

    def bound(self, now: float, timeout_s: float) -> None:
        """Drain, and have `enforce` force the stop if the child still runs after `timeout_s`."""
        self.drain()
        if self._deadline is None:
            self._deadline = now + timeout_s

    def enforce(self, now: float) -> str | None:
        """Past the bound, force the stop: a second SIGTERM (a worker kills its pool and exits 1,
        its unfinished tasks left leased for redelivery), then SIGKILL after `FORCE_GRACE_S`.

        Returns what was done ("forced", "killed"), or None.
        """
        if self._deadline is None or self.poll() is not None:
            return None
        if self._kill_at is None and now >= self._deadline:
            self._kill_at = now + FORCE_GRACE_S
            self._signal(self._proc.pid, signal.SIGTERM, group=False)
            return "forced"
        if self._kill_at is not None and now >= self._kill_at:
            self._deadline = None
            self.kill()
            return "killed"
        return None

    def kill(self) -> None:
        """SIGKILL the child's process group; nothing is acked. Its pool processes, each in a
        group of its own, die with it (see stemrun.worker.child and group_keeper)."""
        self.stopping = True
        self._signal(self._proc.pid, signal.SIGKILL, group=True)

    def kill_leftovers(self) -> None:
        """After an unexpected exit: SIGKILL what is left of its process group.

        Pool processes lead groups of their own and die with their worker on their own; this
        catches anything else the worker started in its group.
        """
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the exit; the code, or None if still running."""
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _signal(self, pid: int, signum: int, *, group: bool) -> None:
        if self._proc.poll() is not None:
            return
        try:
            if group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass  # exited between the poll and the signal


def spawn(launch: Launch, spec: ChildSpec, name: str, config_file: Path, now: float) -> Child:
    """Start one child in its own process group. Raises OSError when it cannot be started.

    Its own process group keeps a terminal's Ctrl-C away from it: only the supervisor decides
    when a child drains or dies, so a double Ctrl-C means exactly what the supervisor says.
    """
    argv = launch.argv(spec, name, config_file)
    # `up` serves the one metrics endpoint; the child watches for this supervisor's death.
    env = {**os.environ, METRICS_SERVER_ENV: "supervisor", SUPERVISOR_PID_ENV: str(os.getpid())}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0, env=env)
    return Child(spec, name, config_file, proc, now)
