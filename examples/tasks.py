"""Task handlers used by stem.yaml.example: plain functions, referenced as `module:attribute`."""

from __future__ import annotations

import asyncio
import hashlib
import time

from stemrun import TaskContext


def send_email(ctx: TaskContext, recipient: str, subject: str = "Hello") -> dict[str, object]:
    """Pretend to deliver an email, reporting progress on the way."""
    ctx.progress(0.5, stage="rendered")
    digest = hashlib.sha256(f"{recipient}:{subject}".encode()).hexdigest()[:12]
    ctx.progress(1.0, stage="sent")
    return {"delivered": True, "recipient": recipient, "message_id": digest}


def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y


async def fetch_profile(user_id: int) -> dict[str, object]:
    """An async handler: the worker runs it on an event loop."""
    await asyncio.sleep(0.01)
    return {"user_id": user_id, "name": f"user-{user_id}"}


def enrich_profile(previous: dict[str, object]) -> dict[str, object]:
    """Second chain step: receives the first step's result as `previous`."""
    return {**previous, "score": len(str(previous.get("name", "")))}


def generate_report(region: str) -> dict[str, object]:
    """A slow-ish report."""
    time.sleep(0.1)
    return {"region": region, "rows": 42}


def noop() -> None:
    """Does nothing; used by benchmarks."""


def crunch(ctx: TaskContext, steps: int = 10, delay: float = 0.2) -> int:
    """A slow task that reports progress, to watch `stemrun enqueue --wait` draw its bar."""
    for step in range(steps):
        time.sleep(delay)
        ctx.progress((step + 1) / steps, stage=f"step {step + 1}/{steps}")
    return steps
