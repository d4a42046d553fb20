"""Task handlers of the monolith example; stem.yaml names them as `monolith_tasks:<function>`."""

from __future__ import annotations

import time

from stemrun import TaskContext


def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y


def word_count(text: str) -> int:
    """Count the words of one text (a group or chord member)."""
    return len(text.split())


def total(results: list[int]) -> int:
    """Chord callback: the members' results arrive in body order as `results`."""
    return sum(results)


def generate_report(ctx: TaskContext, region: str, rows: int = 3) -> dict[str, object]:
    """A slower task that reports progress, visible in `GET /tasks/{id}` while it runs."""
    for row in range(rows):
        time.sleep(0.1)
        ctx.progress((row + 1) / rows, stage=f"row {row + 1}/{rows}")
    return {"region": region, "rows": rows}


def tick() -> float:
    """Fired by the in-process beat; returns when it ran."""
    return time.time()
