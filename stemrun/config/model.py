"""The validated configuration as frozen dataclasses; durations are float seconds (`_s`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PoolKind = Literal["process", "thread", "async"]

#: How long a warm stop waits for running tasks (`workers.<name>.shutdown_timeout`).
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
#: The default `limits.max_payload`, in bytes (1 MiB).
DEFAULT_MAX_PAYLOAD = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBackoff:
    initial_s: float = 1.0
    max_s: float = 300.0
    factor: float = 2.0
    jitter: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UniqueConfig:
    key: str
    ttl_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    name: str
    rate_limit: str | None = None  # "N/s", "N/m" or "N/h"
    rate_limit_key: str | None = None  # key template: one limiter per rendered key


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskConfig:
    name: str
    handler: str  # "package.module:attribute"
    queue: str
    max_retries: int
    retry_backoff: RetryBackoff = field(default_factory=RetryBackoff)
    retry_on: tuple[str, ...] = ()
    dont_retry_on: tuple[str, ...] = ()
    soft_time_limit_s: float | None = None
    hard_time_limit_s: float | None = None
    visibility_timeout_s: float = 30.0
    rate_limit: str | None = None
    priority: int = 0
    expires_s: float | None = None
    result_ttl_s: float = 86400.0
    unique: UniqueConfig | None = None
    rate_limit_key: str | None = None  # key template of `rate_limit`: one limiter per key
    # Bytes of the task's encoded message: its `limits.max_payload`, else the top-level one.
    max_payload: int = DEFAULT_MAX_PAYLOAD


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerGroupConfig:
    name: str
    queues: tuple[str, ...]
    concurrency: int
    pool: PoolKind = "process"
    prefetch_multiplier: int = 2
    replicas: int = 1
    max_tasks_per_child: int | None = None
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S


@dataclass(frozen=True, slots=True, kw_only=True)
class BeatConfig:
    enabled: bool = True
    tick_interval_s: float = 1.0
    lock_ttl_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleConfig:
    name: str
    task: str
    spec: str
    timezone: str = "UTC"
    queue: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    jitter_s: float = 0.0
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StepConfig:
    task: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowConfig:
    name: str
    kind: Literal["chain", "group", "chord"]
    steps: tuple[StepConfig, ...]  # chain steps, group members, or chord body
    callback: StepConfig | None = None  # chord only


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningConfig:
    algorithm: Literal["hmac-sha256", "ed25519"] = "hmac-sha256"
    keys: dict[str, str] = field(default_factory=dict)  # hmac: id -> base64 secret
    public_keys: dict[str, str] = field(default_factory=dict)  # ed25519
    private_keys: dict[str, str] = field(default_factory=dict)  # ed25519
    active_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    allow_insecure: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes; the default of every task's own limit


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything stem.yaml declares, after interpolation, the STEM_* overlay and defaults."""

    path: Path | None  # the file it came from (None when built in code)
    root_dir: Path  # relative paths resolve against this
    version: int = 1
    broker: str
    result_backend: str
    schedule_store: str
    namespace: str = "stem"
    default_queue: str = "default"
    default_max_retries: int = 3
    prefetch_multiplier: int = 2
    result_ttl_s: float = 86400.0
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    workers: dict[str, WorkerGroupConfig] = field(default_factory=dict)
    beat: BeatConfig = field(default_factory=BeatConfig)
    schedules: dict[str, ScheduleConfig] = field(default_factory=dict)
    workflows: dict[str, WorkflowConfig] = field(default_factory=dict)
    signing: SigningConfig | None = None
    tls: TlsConfig | None = None
    metrics_port: int | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Settings that work but weaken security, as `FILE:LINE:COL: path: message` lines
    # (docs/security.md, "Warnings"); the commands that run things print them.
    warnings: tuple[str, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def largest_max_payload(self) -> int:
        """The largest payload limit any task has: what a message must exceed to fit none."""
        return max([self.limits.max_payload, *(t.max_payload for t in self.tasks.values())])
