"""The worker: consumes queues and runs tasks in process, thread or async pools.

`Worker` is imported on first use, so a process-pool child (`stemrun.worker.child`) does not
load the consumer, the client and the stores it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemrun.worker.consumer import Worker

__all__ = ["Worker"]


# Type checkers read the imports above instead: were __getattr__ visible to them, mypy would
# accept any misspelt name as Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """`Worker`, imported on first use. Raises AttributeError for other names."""
        if name == "Worker":
            from stemrun.worker.consumer import Worker

            return Worker
        raise AttributeError(f"module 'stemrun.worker' has no attribute {name!r}")
