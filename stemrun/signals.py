"""SIGTERM / SIGINT for a worker on the main thread: graceful first, a second SIGINT forces."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def install(stop: Callable[[bool], None], stopping: threading.Event) -> Callable[[], None]:
    """Route SIGTERM/SIGINT to `stop(graceful)`; returns a function restoring the old handlers.

    Does nothing off the main thread (Python only delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop(not (signum == signal.SIGINT and stopping.is_set()))

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
