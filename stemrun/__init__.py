"""stemrun: background tasks for Python, declared in one stem.yaml."""

from __future__ import annotations

from stemrun.beat import Beat
from stemrun.canvas import Chain, Chord, Group, Signature
from stemrun.client import EnqueueOptions, Stem, TaskStatus
from stemrun.context import TaskContext
from stemrun.errors import (
    ConfigError,
    SigningConfigError,
    SoftTimeLimitExceeded,
    StemrunError,
    TaskNotRegistered,
    UsageError,
    WaitTimeout,
)
from stemrun.state import TaskState
from stemrun.worker import Worker

__all__ = [
    "Beat",
    "Chain",
    "Chord",
    "ConfigError",
    "EnqueueOptions",
    "Group",
    "Signature",
    "SigningConfigError",
    "SoftTimeLimitExceeded",
    "Stem",
    "StemrunError",
    "TaskContext",
    "TaskNotRegistered",
    "TaskState",
    "TaskStatus",
    "UsageError",
    "WaitTimeout",
    "Worker",
]
__version__ = "0.1.0"
