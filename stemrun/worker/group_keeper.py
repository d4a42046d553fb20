"""Entry point of a process pool's group keeper: `python -m stemrun.worker.group_keeper`.

Each process-pool child leads a process group, which holds the processes its tasks start
(docs/workers.md). The worker kills a child's group whenever it ends the child, but a worker that
dies cannot: its children die with it (child.py), and the processes their tasks started would run
on. So the pool starts this keeper in a session of its own and tells it, one line each on its
stdin, which groups to keep: `+PID` when it starts a child, `-PID` once it reaped that child and
killed what it left. The end of stdin means the worker is gone, however it died (the worker holds
the only write end): the keeper SIGKILLs every group still listed, then exits.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable


def kept_groups(lines: Iterable[bytes]) -> set[int]:
    """The groups still listed once `lines` ends."""
    groups: set[int] = set()
    for line in lines:
        pid = int(line[1:])
        if line.startswith(b"+"):
            groups.add(pid)
        else:
            groups.discard(pid)
    return groups


def main() -> int:
    """Keep the list until the worker is gone, then kill every group on it."""
    # a terminal or supervisor signals whole process groups; only the end of stdin ends this
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for pid in kept_groups(sys.stdin.buffer):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in that group
    return 0


if __name__ == "__main__":
    sys.exit(main())
