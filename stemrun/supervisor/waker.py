"""Waking the supervisor loop from signal handlers and other threads: a self-pipe.

`threading.Event.set` takes a lock, and a signal handler runs on the main thread between any two
bytecodes — possibly while that same thread holds the lock inside `Event.wait`, a deadlock. A
write to a non-blocking pipe is safe anywhere.
"""

from __future__ import annotations

import os
import select


class Waker:
    """`wake()` from anywhere (signal-safe); `wait(timeout)` on the loop's thread."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def wake(self) -> None:
        """Make the current or next `wait` return at once."""
        try:
            os.write(self._write, b"!")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def wait(self, timeout_s: float) -> None:
        """Block until woken or `timeout_s` passed; swallows pending wake-ups."""
        ready, _, _ = select.select([self._read], [], [], timeout_s)
        if ready:
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        """Release the pipe."""
        os.close(self._read)
        os.close(self._write)
