"""Task handlers of the microservice example, imported by the workers only (never by the API)."""

from __future__ import annotations

import hashlib

from stemrun import TaskContext


def confirm_order(ctx: TaskContext, order_id: str, amount: float) -> dict[str, object]:
    """Confirm an order, then send its confirmation email as a child task."""
    if amount <= 0:
        raise ValueError(f"order {order_id}: amount must be positive, got {amount}")
    ctx.progress(0.5, stage="charged")
    email_id = ctx.enqueue(
        "email.send", args={"recipient": f"{order_id}@example.com", "order_id": order_id}
    )
    return {"order_id": order_id, "confirmed": True, "email_task": email_id}


def send_email(recipient: str, order_id: str) -> dict[str, object]:
    """Pretend to deliver the confirmation email."""
    message_id = hashlib.sha256(f"{recipient}:{order_id}".encode()).hexdigest()[:12]
    return {"recipient": recipient, "message_id": message_id}
