"""Process signals on the main thread: a stop that is graceful first and forced on a second signal.

The first SIGTERM or SIGINT asks for a graceful stop; another one (either kind: a process manager
repeats SIGTERM, a person presses Ctrl-C twice) forces it. Workers and beat use `install_stop`; the
supervisor adds SIGHUP (reload) through `install` with `stop_handler`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType

Handler = Callable[[int], None]


def install(handlers: Mapping[signal.Signals, Handler]) -> Callable[[], None]:
    """Route each signal to its handler (called with the signal number); returns a function
    restoring the previous handlers.

    Does nothing off the main thread (Python only delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in handlers}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        handlers[signal.Signals(signum)](signum)

    for sig in handlers:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def stop_handler(stop: Callable[[bool], None], stopping: Callable[[], bool]) -> Handler:
    """A SIGTERM/SIGINT handler calling `stop(graceful)`: graceful, unless already `stopping()`."""

    def on_stop(signum: int) -> None:
        stop(not stopping())

    return on_stop


def install_stop(stop: Callable[[bool], None], stopping: Callable[[], bool]) -> Callable[[], None]:
    """SIGTERM/SIGINT call `stop(graceful)`: graceful, unless one came already (`stopping()`)."""
    on_stop = stop_handler(stop, stopping)
    return install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop})
