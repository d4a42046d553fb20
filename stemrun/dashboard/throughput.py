"""Throughput and failures over the last minutes, from samples of the store's task counters.

The counters are totals since the store was created, so a rate needs two readings: every time a
page (or its live refresh) reads the overview, the totals are recorded here, and the chart shows
the rate between consecutive samples. Nothing runs in the background.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

#: How far back the chart reaches.
WINDOW_S = 600.0
#: Samples closer together than this are merged (many open tabs would otherwise jitter the rate).
MIN_GAP_S = 1.0
#: The chart's drawing box (SVG user units).
WIDTH, HEIGHT = 600.0, 120.0


@dataclass(frozen=True, slots=True)
class Sample:
    """Totals at one moment: attempts that succeeded, and that failed (retried or for good)."""

    at: float
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class Rate:
    """Per-minute rates between two samples, stamped with the later one's time."""

    at: float
    succeeded: float
    failed: float


class Sampler:
    """The recent counter samples of this dashboard process (thread-safe)."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()
        self._lock = threading.Lock()

    def add(self, now: float, tasks: Mapping[str, int]) -> None:
        """Record the outcome totals (`metric_totals(...)["tasks"]`) read at `now`."""
        failed = int(tasks.get("failed", 0)) + int(tasks.get("retried", 0))
        sample = Sample(now, int(tasks.get("succeeded", 0)), failed)
        with self._lock:
            if self._samples and now - self._samples[-1].at < MIN_GAP_S:
                self._samples.pop()
            self._samples.append(sample)
            while self._samples and now - self._samples[0].at > WINDOW_S:
                self._samples.popleft()

    def rates(self) -> list[Rate]:
        """Per-minute rates between consecutive samples, oldest first."""
        with self._lock:
            samples = list(self._samples)
        rates = []
        for before, after in pairwise(samples):
            span = max(after.at - before.at, 1e-6)
            # A counter that went down means another store or a reset: show 0, not a dip.
            rates.append(
                Rate(
                    after.at,
                    max(0, after.succeeded - before.succeeded) * 60.0 / span,
                    max(0, after.failed - before.failed) * 60.0 / span,
                )
            )
        return rates


def chart(rates: list[Rate], now: float) -> dict[str, object]:
    """The SVG polylines (`points` attributes) and labels for the throughput chart."""
    peak = max([1.0, *(r.succeeded for r in rates), *(r.failed for r in rates)])
    last = rates[-1] if rates else Rate(now, 0.0, 0.0)
    total = last.succeeded + last.failed
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "succeeded": _points([(r.at, r.succeeded) for r in rates], peak, now),
        "failed": _points([(r.at, r.failed) for r in rates], peak, now),
        "peak": round(peak, 1),
        "succeeded_now": round(last.succeeded, 1),
        "failed_now": round(last.failed, 1),
        "failure_rate": round(100.0 * last.failed / total, 1) if total else 0.0,
        "samples": len(rates),
    }


def _points(values: list[tuple[float, float]], peak: float, now: float) -> str:
    coords = []
    for at, value in values:
        x = WIDTH * (1.0 - min(WINDOW_S, max(0.0, now - at)) / WINDOW_S)
        y = HEIGHT * (1.0 - value / peak)
        coords.append(f"{x:.1f},{y:.1f}")
    return " ".join(coords)
