"""When to restart a crashed child: exponential backoff, reset by a stable run, capped for loops."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """0.5 s doubling to 30 s; reset after 30 s up; 5 crashes in a minute is a crash loop."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    stable_after_s: float = 30.0  # a child up this long starts again from `initial_s`
    loop_crashes: int = 5  # this many crashes ...
    loop_window_s: float = 60.0  # ... within this window is a crash loop


class Backoff:
    """The restart state of one child slot; pure, driven by the times it is given."""

    def __init__(self, policy: BackoffPolicy | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self._next_s = self.policy.initial_s
        self._crashes: deque[float] = deque()
        self.looping = False  # the last crash completed a crash loop

    def crashed(self, *, started_at: float, now: float) -> float:
        """Record a crash at `now` of a child started at `started_at`; the delay before restart."""
        policy = self.policy
        if now - started_at >= policy.stable_after_s:
            self._next_s = policy.initial_s
        self._crashes.append(now)
        while self._crashes and self._crashes[0] <= now - policy.loop_window_s:
            self._crashes.popleft()
        self.looping = len(self._crashes) >= policy.loop_crashes
        delay = policy.max_s if self.looping else self._next_s
        self._next_s = min(policy.max_s, self._next_s * policy.factor)
        return delay

    @property
    def recent_crashes(self) -> int:
        """Crashes inside the loop window, as of the last one."""
        return len(self._crashes)
