"""Validated stem.yaml data -> frozen Config dataclasses, with every default filled in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stemrun.config.duration import parse_duration
from stemrun.config.model import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    BeatConfig,
    Config,
    LimitsConfig,
    LoggingConfig,
    QueueConfig,
    RetryBackoff,
    ScheduleConfig,
    SigningConfig,
    StepConfig,
    TaskConfig,
    TlsConfig,
    UniqueConfig,
    WorkerGroupConfig,
    WorkflowConfig,
)
from stemrun.config.semantic import declared_queues
from stemrun.config.size import parse_size

DEFAULT_BROKER = "sqlite:///.stem/stem.db"
DEFAULT_UNIQUE_TTL_S = 3600.0
_SQLITE_PREFIX = "sqlite:///"


def normalise_sqlite_url(url: str, root_dir: Path) -> str:
    """`sqlite:///rel/x.db` -> `sqlite:////<root_dir>/rel/x.db`; other URLs are unchanged."""
    if not url.startswith(_SQLITE_PREFIX):
        return url
    rest = url[len(_SQLITE_PREFIX) :]
    if rest.startswith("/") or rest.startswith(":memory:"):
        return url
    path, sep, query = rest.partition("?")
    return f"{_SQLITE_PREFIX}{(root_dir / path).as_posix()}{sep}{query}"


def _seconds(value: Any, default: float | None) -> float | None:
    return default if value is None else parse_duration(value)


def _required_seconds(value: Any, default: float) -> float:
    return default if value is None else parse_duration(value)


def _backoff(data: dict[str, Any] | None) -> RetryBackoff:
    data = data or {}
    base = RetryBackoff()
    return RetryBackoff(
        initial_s=_required_seconds(data.get("initial"), base.initial_s),
        max_s=_required_seconds(data.get("max"), base.max_s),
        factor=float(data.get("factor", base.factor)),
        jitter=bool(data.get("jitter", base.jitter)),
    )


def _unique(data: dict[str, Any] | None) -> UniqueConfig | None:
    if data is None:
        return None
    return UniqueConfig(
        key=data["key"], ttl_s=_required_seconds(data.get("ttl"), DEFAULT_UNIQUE_TTL_S)
    )


def _max_payload(data: dict[str, Any], default: int) -> int:
    """The `max_payload` of a `limits` section's parent `data`, else `default`."""
    value = (data.get("limits") or {}).get("max_payload")
    return default if value is None else parse_size(value)


def _task(
    name: str, data: dict[str, Any], top: dict[str, Any], result_ttl_s: float, max_payload: int
) -> TaskConfig:
    return TaskConfig(
        name=name,
        handler=data["handler"],
        queue=data.get("queue", top.get("default_queue", "default")),
        max_retries=data.get("max_retries", top.get("default_max_retries", 3)),
        retry_backoff=_backoff(data.get("retry_backoff")),
        retry_on=tuple(data.get("retry_on", ())),
        dont_retry_on=tuple(data.get("dont_retry_on", ())),
        soft_time_limit_s=_seconds(data.get("soft_time_limit"), None),
        hard_time_limit_s=_seconds(data.get("hard_time_limit"), None),
        visibility_timeout_s=_required_seconds(data.get("visibility_timeout"), 30.0),
        rate_limit=_rate(data.get("rate_limit")),
        rate_limit_key=_rate_key(data.get("rate_limit")),
        priority=data.get("priority", 0),
        expires_s=_seconds(data.get("expires"), None),
        result_ttl_s=_required_seconds(data.get("result_ttl"), result_ttl_s),
        unique=_unique(data.get("unique")),
        max_payload=_max_payload(data, max_payload),
    )


def _worker(name: str, data: dict[str, Any], top: dict[str, Any]) -> WorkerGroupConfig:
    return WorkerGroupConfig(
        name=name,
        queues=tuple(data.get("queues") or declared_queues_in_order(top)),
        concurrency=data.get("concurrency", os.cpu_count() or 1),
        pool=data.get("pool", "process"),
        prefetch_multiplier=data.get("prefetch_multiplier", top.get("prefetch_multiplier", 2)),
        replicas=data.get("replicas", 1),
        max_tasks_per_child=data.get("max_tasks_per_child"),
        shutdown_timeout_s=_required_seconds(
            data.get("shutdown_timeout"), DEFAULT_SHUTDOWN_TIMEOUT_S
        ),
    )


def declared_queues_in_order(top: dict[str, Any]) -> list[str]:
    """`default_queue` first, then the other declared queues in file order."""
    names = declared_queues(top)
    default = top.get("default_queue", "default")
    return [default, *(name for name in names if name != default)]


def _schedule(name: str, data: dict[str, Any]) -> ScheduleConfig:
    return ScheduleConfig(
        name=name,
        task=data["task"],
        spec=data["spec"],
        timezone=data.get("timezone", "UTC"),
        queue=data.get("queue"),
        args=dict(data.get("args") or {}),
        jitter_s=_required_seconds(data.get("jitter"), 0.0),
        enabled=data.get("enabled", True),
    )


def _step(data: dict[str, Any]) -> StepConfig:
    return StepConfig(task=data["task"], args=dict(data.get("args") or {}))


def _workflow(name: str, data: dict[str, Any]) -> WorkflowConfig:
    if "chord" in data:
        chord = data["chord"]
        steps = tuple(_step(step) for step in chord["body"])
        return WorkflowConfig(
            name=name, kind="chord", steps=steps, callback=_step(chord["callback"])
        )
    if "chain" in data:
        return WorkflowConfig(name=name, kind="chain", steps=tuple(map(_step, data["chain"])))
    return WorkflowConfig(name=name, kind="group", steps=tuple(map(_step, data["group"])))


def _signing(data: dict[str, Any] | None) -> SigningConfig | None:
    if data is None:
        return None
    algorithm = data.get("algorithm", "hmac-sha256")
    keys, public, private = (
        dict(data.get(k) or {}) for k in ("keys", "public_keys", "private_keys")
    )
    active = data.get("active_key")
    if active is None:
        ids = set(keys) if algorithm == "hmac-sha256" else set(public) | set(private)
        active = next(iter(ids)) if len(ids) == 1 else None
    return SigningConfig(
        algorithm=algorithm, keys=keys, public_keys=public, private_keys=private, active_key=active
    )


def _path(value: str | None, root_dir: Path) -> Path | None:
    return None if value is None else root_dir / Path(value).expanduser()


def _tls(data: dict[str, Any] | None, root_dir: Path) -> TlsConfig | None:
    if data is None:
        return None
    return TlsConfig(
        ca_cert=_path(data.get("ca_cert"), root_dir),
        client_cert=_path(data.get("client_cert"), root_dir),
        client_key=_path(data.get("client_key"), root_dir),
        allow_insecure=data.get("allow_insecure", False),
    )


def _stores(data: dict[str, Any], root_dir: Path) -> tuple[str, str, str]:
    broker = normalise_sqlite_url(data.get("broker", DEFAULT_BROKER), root_dir)
    backend = normalise_sqlite_url(data.get("result_backend", broker), root_dir)
    schedule_store = normalise_sqlite_url(data.get("schedule_store", backend), root_dir)
    return broker, backend, schedule_store


def _rate(value: str | dict[str, Any] | None) -> str | None:
    """The rate of a `rate_limit` given as `N/s` or as `{rate, key}`."""
    return value.get("rate") if isinstance(value, dict) else value


def _rate_key(value: str | dict[str, Any] | None) -> str | None:
    return value.get("key") if isinstance(value, dict) else None


def _queue(name: str, body: dict[str, Any]) -> QueueConfig:
    limit = body.get("rate_limit")
    return QueueConfig(name=name, rate_limit=_rate(limit), rate_limit_key=_rate_key(limit))


def _queues(data: dict[str, Any]) -> dict[str, QueueConfig]:
    bodies = data.get("queues") or {}
    return {name: _queue(name, bodies.get(name) or {}) for name in declared_queues_in_order(data)}


def _named(data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = data.get(section) or {}
    return entries


def build_config(data: dict[str, Any], *, path: Path | None, root_dir: Path) -> Config:
    """The Config for schema-valid, semantically checked `data`."""
    broker, backend, schedule_store = _stores(data, root_dir)
    result_ttl_s = _required_seconds(data.get("result_ttl"), 86400.0)
    beat = data.get("beat") or {}
    max_payload = _max_payload(data, DEFAULT_MAX_PAYLOAD)
    tasks = _named(data, "tasks")
    return Config(
        path=path,
        root_dir=root_dir,
        version=data.get("version", 1),
        broker=broker,
        result_backend=backend,
        schedule_store=schedule_store,
        namespace=data.get("namespace", "stem"),
        default_queue=data.get("default_queue", "default"),
        default_max_retries=data.get("default_max_retries", 3),
        prefetch_multiplier=data.get("prefetch_multiplier", 2),
        result_ttl_s=result_ttl_s,
        queues=_queues(data),
        tasks={n: _task(n, t, data, result_ttl_s, max_payload) for n, t in tasks.items()},
        workers={n: _worker(n, w, data) for n, w in _named(data, "workers").items()},
        beat=BeatConfig(
            enabled=beat.get("enabled", True),
            tick_interval_s=_required_seconds(beat.get("tick_interval"), 1.0),
            lock_ttl_s=_required_seconds(beat.get("lock_ttl"), 10.0),
        ),
        schedules={n: _schedule(n, s) for n, s in _named(data, "schedules").items()},
        workflows={n: _workflow(n, w) for n, w in _named(data, "workflows").items()},
        signing=_signing(data.get("signing")),
        tls=_tls(data.get("tls"), root_dir),
        metrics_port=(data.get("metrics") or {}).get("port"),
        logging=LoggingConfig(**(data.get("logging") or {})),
        limits=LimitsConfig(max_payload=max_payload),
    )
