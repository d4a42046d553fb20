"""stemrun: background tasks for Python, declared in one stem.yaml."""

from __future__ import annotations

from stemrun.errors import SoftTimeLimitExceeded, StemrunError

__all__ = ["SoftTimeLimitExceeded", "StemrunError"]
__version__ = "0.1.0"
