"""The whole stemrun exception tree.

Everything stemrun raises on purpose derives from `StemrunError`, except the interrupts
(`SoftTimeLimitExceeded`, `WorkerShutdown`, `Retry`, `TaskCancelled`), which derive from
`BaseException` so that a handler's `except Exception:` cannot swallow them.
"""

from __future__ import annotations

import builtins


class StemrunError(Exception):
    """Base of every error stemrun raises on purpose."""


class ConfigError(StemrunError):
    """stem.yaml (or its environment overlay) is invalid.

    `str()` gives `stem.yaml:LINE:COL: yaml.path: message` lines, one per problem.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SigningConfigError(ConfigError):
    """The signing section cannot do what is asked: sign (no usable active key) or verify."""


class UsageError(StemrunError):
    """A command or API call was given bad input (unknown task, undeclared queue, bad args)."""


class TaskNotRegistered(UsageError):
    """The task name is not declared in stem.yaml."""


class UnknownQueue(UsageError):
    """The queue is not declared in stem.yaml."""


class PayloadTooLarge(UsageError):
    """A task's encoded message is larger than its `limits.max_payload`; nothing was stored.

    `task` names the task, `size` and `limit` are in bytes.
    """

    def __init__(self, message: str, *, task: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.task = task
        self.size = size
        self.limit = limit


class BrokerError(StemrunError):
    """The broker failed to do what was asked."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached."""


class BackendError(StemrunError):
    """The result backend failed to do what was asked."""


class BackendUnavailable(BackendError):
    """The result backend could not be reached."""


class ScheduleStoreError(StemrunError):
    """The schedule store failed to do what was asked (or cannot be opened for its URL)."""


class DecodeError(StemrunError):
    """An envelope could not be decoded."""


class SignatureInvalid(StemrunError):
    """An envelope's signature is missing, made with an unknown key, or wrong."""


class MissingDependency(StemrunError):
    """An optional dependency needed for this feature is not installed."""


class WaitTimeout(StemrunError, builtins.TimeoutError):
    """A wait for a task's terminal state ran out of time."""


class HandlerImportError(StemrunError):
    """A task's handler path does not import."""


class SoftTimeLimitExceeded(BaseException):
    """Raised inside a running task when its soft time limit passes, so it can clean up."""


class WorkerShutdown(BaseException):
    """Raised to stop a worker immediately."""


class Retry(BaseException):
    """Raised by `TaskContext.retry()` to schedule another attempt."""

    def __init__(
        self,
        countdown_s: float | None = None,
        eta: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        self.countdown_s = countdown_s
        self.eta = eta
        self.exc = exc
        super().__init__("retry requested")


class TaskCancelled(BaseException):
    """Raised in a running task at its next ctx.progress()/heartbeat() after `stemrun cancel`."""
