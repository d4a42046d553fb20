"""Task states and the sets that classify them."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRIED = "retried"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


TERMINAL: frozenset[TaskState] = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}
)
ACTIVE: frozenset[TaskState] = frozenset({TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRIED})


class DeadLetterReason(StrEnum):
    """Why an envelope was moved to the dead-letter store."""

    MAX_RETRIES_EXHAUSTED = "max-retries-exhausted"
    NOT_RETRYABLE = "not-retryable"
    SIGNATURE_INVALID = "signature-invalid"
    UNREGISTERED_TASK = "unregistered-task"
    DECODE_ERROR = "decode-error"
    MAX_DELIVERIES_EXCEEDED = "max-deliveries-exceeded"
    TOO_LARGE = "too-large"
