"""stemrun: background tasks for Python, declared in one stem.yaml.

The public names are imported on first use (PEP 562), so `import stemrun` costs a process-pool
child or a web producer only the modules it touches (see docs/architecture.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemrun.beat import Beat
    from stemrun.canvas import Chain, Chord, Group, Signature
    from stemrun.client import Stem, TaskStatus
    from stemrun.context import TaskContext
    from stemrun.enqueue import EnqueueOptions
    from stemrun.errors import (
        ConfigError,
        PayloadTooLarge,
        SigningConfigError,
        SoftTimeLimitExceeded,
        StemrunError,
        TaskNotRegistered,
        UsageError,
        WaitTimeout,
    )
    from stemrun.state import TaskState
    from stemrun.worker import Worker

#: Each public name and the module that defines it.
_HOMES = {
    "Beat": "stemrun.beat",
    "Chain": "stemrun.canvas",
    "Chord": "stemrun.canvas",
    "ConfigError": "stemrun.errors",
    "EnqueueOptions": "stemrun.enqueue",
    "Group": "stemrun.canvas",
    "PayloadTooLarge": "stemrun.errors",
    "Signature": "stemrun.canvas",
    "SigningConfigError": "stemrun.errors",
    "SoftTimeLimitExceeded": "stemrun.errors",
    "Stem": "stemrun.client",
    "StemrunError": "stemrun.errors",
    "TaskContext": "stemrun.context",
    "TaskNotRegistered": "stemrun.errors",
    "TaskState": "stemrun.state",
    "TaskStatus": "stemrun.client",
    "UsageError": "stemrun.errors",
    "WaitTimeout": "stemrun.errors",
    "Worker": "stemrun.worker",
}

__all__ = [
    "Beat",
    "Chain",
    "Chord",
    "ConfigError",
    "EnqueueOptions",
    "Group",
    "PayloadTooLarge",
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


# Type checkers read the imports above instead: were __getattr__ visible to them, mypy would
# accept any misspelt name as Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Import a public name's module on first access. Raises AttributeError for other names."""
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module 'stemrun' has no attribute {name!r}")
        value = getattr(import_module(home), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
