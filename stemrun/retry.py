"""Retry policy: a pure decision from a task's config, the attempt and what it raised.

`decide` returns the delay in seconds before the next attempt, or None to give up. Jitter is
"equal jitter": a delay drawn uniformly from [backoff/2, backoff], so retries of many tasks that
failed together spread out while none is retried (almost) at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from stemrun.config.model import RetryBackoff, TaskConfig


def decide(
    task: TaskConfig,
    attempt: int,
    exc_types: Sequence[str],
    rng: random.Random,
    *,
    requested_s: float | None = None,
    forced: bool = False,
) -> float | None:
    """The delay before retrying `attempt` (0-based), or None when the task should fail now.

    `exc_types` are the class names of the exception and its bases (its MRO), most specific
    first. `forced` marks a retry the handler asked for (`ctx.retry()`): only the budget applies.
    `requested_s` replaces the backoff delay (`ctx.retry(countdown=...)`).
    """
    if attempt >= task.max_retries:
        return None
    if not forced and not retryable(task, exc_types):
        return None
    if requested_s is not None:
        return max(0.0, requested_s)
    return backoff(task.retry_backoff, attempt, rng)


def retryable(task: TaskConfig, exc_types: Sequence[str]) -> bool:
    """Whether an exception with these class names may be retried (dont_retry_on wins)."""
    names = set(exc_types)
    if names.intersection(task.dont_retry_on):
        return False
    return not task.retry_on or bool(names.intersection(task.retry_on))


def backoff(policy: RetryBackoff, attempt: int, rng: random.Random) -> float:
    """Exponential delay `initial * factor**attempt`, capped at `max`, with optional jitter."""
    try:
        raw = policy.initial_s * policy.factor**attempt
    except OverflowError:
        raw = math.inf
    delay = min(policy.max_s, raw)
    if policy.jitter:
        return rng.uniform(delay / 2.0, delay)
    return delay
