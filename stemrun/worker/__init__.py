"""The worker: consumes queues and runs tasks in process, thread or async pools."""

from __future__ import annotations

from stemrun.worker.consumer import Worker

__all__ = ["Worker"]
