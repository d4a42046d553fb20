"""Children of `stemrun up` notice when their supervisor is gone, so none is left orphaned.

A SIGKILLed supervisor cannot drain its children; without this they would run on, unsupervised,
taking tasks nobody watches. The supervisor puts its pid in each child's environment; the child
takes it out (so processes it starts in turn do not inherit it) and compares it with its parent
pid, which changes when the parent dies.
"""

from __future__ import annotations

import os

#: Set by the supervisor in every child's environment: the supervisor's pid.
SUPERVISOR_PID_ENV = "STEMRUN_SUPERVISOR_PID"


def claim_supervisor() -> int | None:
    """The pid of the `stemrun up` that started this process (None when there is none)."""
    value = os.environ.pop(SUPERVISOR_PID_ENV, None)
    return int(value) if value and value.isdigit() else None


def supervisor_gone(supervisor: int | None) -> bool:
    """Whether this process had a supervisor and it has died."""
    return supervisor is not None and os.getppid() != supervisor
