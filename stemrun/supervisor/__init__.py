"""`stemrun up`: the supervisor of worker and beat processes, with hot reload."""

from __future__ import annotations

from stemrun.supervisor.loop import Supervisor, UpOptions

__all__ = ["Supervisor", "UpOptions"]
