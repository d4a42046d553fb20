"""Loading a full stem.yaml: values, defaults, paths, which file is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stemrun.config import config_from_mapping, load_config
from stemrun.config.model import RetryBackoff, StepConfig, UniqueConfig
from stemrun.errors import ConfigError

# The product specification's full example, verbatim except: the `result_backend: ...` /
# `schedule_store: ...` placeholders are left out, and the tasks the schedule and workflows
# name are declared.
SPEC_EXAMPLE = """\
version: 1
broker: sqlite:///.stem/stem.db        # default when omitted
namespace: stem                        # prefix for keys/tables; lets several apps share a store
default_queue: default
default_max_retries: 3
prefetch_multiplier: 2
result_ttl: 1d

queues:                                # optional; every queue a task or worker names must be here
  default: {}
  notifications: {rate_limit: 100/s}   # global across all workers

tasks:
  email.send:
    handler: myapp.tasks:send_email    # "package.module:attribute"
    queue: notifications
    max_retries: 5
    retry_backoff: {initial: 2s, max: 5m, factor: 2, jitter: true}
    retry_on: [ConnectionError]        # optional allow-list of exception class names
    dont_retry_on: [ValueError]        # optional deny-list (wins over retry_on)
    soft_time_limit: 10s
    hard_time_limit: 20s
    visibility_timeout: 60s            # lease; renewed while the task runs
    rate_limit: 10/s                   # N/s, N/m, N/h; global across workers: starts are spaced
                                       # evenly, never more than N+1 in any window of the period
    priority: 0                        # 0..9, higher runs first
    expires: 1h                        # cancel if it has not started within this time
    result_ttl: 1d
    unique: {key: "{args.user_id}", ttl: 10m}   # optional dedupe at enqueue
  email.send_digest: {handler: myapp.tasks:send_digest, queue: notifications}
  profile.fetch: {handler: myapp.profile:fetch}
  profile.enrich: {handler: myapp.profile:enrich}
  profile.cache: {handler: myapp.profile:cache}
  report.generate: {handler: myapp.reports:generate}
  image.resize: {handler: myapp.images:resize}
  image.publish: {handler: myapp.images:publish}

workers:                               # worker groups that `stemrun up` runs
  default:
    queues: [default, notifications]   # earlier queues are preferred
    concurrency: 4
    pool: process                      # process | thread | async
    prefetch_multiplier: 2
    replicas: 1                        # number of worker processes for this group
    max_tasks_per_child: 1000          # recycle a pool child after N tasks (process pool)

beat:
  enabled: true
  tick_interval: 1s
  lock_ttl: 10s

schedules:
  send-daily-digest:
    task: email.send_digest
    spec: "cron:0 8 * * *"
    timezone: Europe/Paris             # IANA; default UTC
    queue: notifications
    args: {plan: premium}
    jitter: 5m
    enabled: true

workflows:
  onboarding:
    chain:
      - {task: profile.fetch}
      - {task: profile.enrich}
      - {task: profile.cache}
  regional-reports:
    group:
      - {task: report.generate, args: {region: us}}
      - {task: report.generate, args: {region: eu}}
  thumbnails:
    chord:
      body:
        - {task: image.resize, args: {size: 1x}}
        - {task: image.resize, args: {size: 2x}}
      callback: {task: image.publish}

signing:
  algorithm: hmac-sha256               # or ed25519
  keys: {primary: "${STEM_KEY_PRIMARY}"}        # hmac: id -> base64 secret
  # public_keys: {primary: ...}                 # ed25519: id -> base64 raw public key
  # private_keys: {primary: ...}                # ed25519: id -> base64 raw private key
  active_key: primary

tls:
  ca_cert: certs/ca.crt
  client_cert: certs/client.crt
  client_key: certs/client.key
  allow_insecure: false

metrics:
  port: 9808                           # Prometheus text exposition; omit to disable
logging:
  level: info                          # debug | info | warning | error
  format: text                         # text | json
"""

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHM="


def write(tmp_path: Path, text: str, name: str = "stem.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_spec_example_loads_with_its_values(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    config = load_config(path, env={"STEM_KEY_PRIMARY": KEY})

    assert config.path == path
    assert config.root_dir == tmp_path
    assert config.broker == f"sqlite:///{tmp_path}/.stem/stem.db"
    assert config.result_backend == config.broker
    assert config.schedule_store == config.broker
    assert (config.namespace, config.default_queue) == ("stem", "default")
    assert (config.default_max_retries, config.prefetch_multiplier) == (3, 2)
    assert config.result_ttl_s == 86400.0
    assert config.queues["notifications"].rate_limit == "100/s"
    assert list(config.queues) == ["default", "notifications"]

    task = config.tasks["email.send"]
    assert task.handler == "myapp.tasks:send_email"
    assert task.queue == "notifications"
    assert task.max_retries == 5
    assert task.retry_backoff == RetryBackoff(initial_s=2.0, max_s=300.0, factor=2.0, jitter=True)
    assert (task.retry_on, task.dont_retry_on) == (("ConnectionError",), ("ValueError",))
    assert (task.soft_time_limit_s, task.hard_time_limit_s) == (10.0, 20.0)
    assert task.visibility_timeout_s == 60.0
    assert (task.rate_limit, task.priority, task.expires_s) == ("10/s", 0, 3600.0)
    assert task.unique == UniqueConfig(key="{args.user_id}", ttl_s=600.0)


def test_spec_example_workers_beat_schedules_workflows(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE), env={"STEM_KEY_PRIMARY": KEY})

    group = config.workers["default"]
    assert group.queues == ("default", "notifications")
    assert (group.concurrency, group.pool, group.prefetch_multiplier) == (4, "process", 2)
    assert (group.replicas, group.max_tasks_per_child) == (1, 1000)
    assert (config.beat.enabled, config.beat.tick_interval_s, config.beat.lock_ttl_s) == (
        True,
        1.0,
        10.0,
    )

    entry = config.schedules["send-daily-digest"]
    assert (entry.task, entry.spec, entry.timezone) == (
        "email.send_digest",
        "cron:0 8 * * *",
        "Europe/Paris",
    )
    assert (entry.queue, entry.args, entry.jitter_s, entry.enabled) == (
        "notifications",
        {"plan": "premium"},
        300.0,
        True,
    )

    onboarding = config.workflows["onboarding"]
    assert onboarding.kind == "chain"
    assert [step.task for step in onboarding.steps] == [
        "profile.fetch",
        "profile.enrich",
        "profile.cache",
    ]
    reports = config.workflows["regional-reports"]
    assert reports.kind == "group"
    assert reports.steps[1] == StepConfig(task="report.generate", args={"region": "eu"})
    chord = config.workflows["thumbnails"]
    assert (chord.kind, len(chord.steps)) == ("chord", 2)
    assert chord.callback == StepConfig(task="image.publish")


def test_spec_example_signing_tls_metrics_logging(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE), env={"STEM_KEY_PRIMARY": KEY})

    assert config.signing is not None
    assert config.signing.algorithm == "hmac-sha256"
    assert config.signing.keys == {"primary": KEY}
    assert config.signing.active_key == "primary"
    assert config.tls is not None
    assert config.tls.ca_cert == tmp_path / "certs/ca.crt"
    assert config.tls.client_cert == tmp_path / "certs/client.crt"
    assert config.tls.client_key == tmp_path / "certs/client.key"
    assert config.tls.allow_insecure is False
    assert config.metrics_port == 9808
    assert (config.logging.level, config.logging.format) == ("info", "text")


def test_minimal_file_gets_every_default(tmp_path: Path) -> None:
    path = write(tmp_path, "tasks:\n  hello: {handler: 'tasks:hello'}\nworkers:\n  default: {}\n")
    config = load_config(path, env={})

    assert config.version == 1
    assert config.broker == f"sqlite:///{tmp_path}/.stem/stem.db"
    assert list(config.queues) == ["default"]
    task = config.tasks["hello"]
    assert (task.queue, task.max_retries, task.visibility_timeout_s) == ("default", 3, 30.0)
    assert task.result_ttl_s == 86400.0
    assert task.retry_backoff == RetryBackoff(initial_s=1.0, max_s=300.0, factor=2.0, jitter=True)
    group = config.workers["default"]
    assert group.queues == ("default",)
    assert group.concurrency == (os.cpu_count() or 1)
    assert (group.pool, group.prefetch_multiplier, group.replicas) == ("process", 2, 1)
    assert (config.signing, config.tls, config.metrics_port) == (None, None, None)
    assert config.schedules == {} and config.workflows == {}


def test_top_level_defaults_flow_into_tasks_and_groups(tmp_path: Path) -> None:
    text = """\
default_queue: main
default_max_retries: 7
prefetch_multiplier: 5
result_ttl: 2h
queues: {main: {}, other: }
tasks:
  t: {handler: "pkg.mod:func"}
workers:
  g: {}
"""
    config = load_config(write(tmp_path, text), env={})
    assert (config.tasks["t"].queue, config.tasks["t"].max_retries) == ("main", 7)
    assert config.tasks["t"].result_ttl_s == 7200.0
    assert config.workers["g"].prefetch_multiplier == 5
    assert config.workers["g"].queues == ("main", "other")


def test_relative_sqlite_urls_resolve_against_the_config_directory(tmp_path: Path) -> None:
    text = """\
broker: sqlite:///data/broker.db
result_backend: sqlite:////var/lib/stem/results.db
schedule_store: sqlite:///sched.db?timeout=5
"""
    path = write(tmp_path, text, name="app/stem.yaml")
    config = load_config(path, env={})
    assert config.broker == f"sqlite:///{tmp_path}/app/data/broker.db"
    assert config.result_backend == "sqlite:////var/lib/stem/results.db"
    assert config.schedule_store == f"sqlite:///{tmp_path}/app/sched.db?timeout=5"


def test_relative_config_path_resolves_against_its_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path, "tls: {ca_cert: certs/ca.crt, client_key: /etc/key.pem}\n", name="app/stem.yaml"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config("app/stem.yaml", env={})
    assert config.root_dir == tmp_path / "app"
    assert config.broker == f"sqlite:///{tmp_path}/app/.stem/stem.db"
    assert config.tls is not None
    assert config.tls.ca_cert == tmp_path / "app/certs/ca.crt"
    assert config.tls.client_key == Path("/etc/key.pem")


def test_store_defaults_chain_broker_to_backend_to_schedule_store(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "broker: redis://localhost:6379/0\n"), env={})
    assert config.result_backend == "redis://localhost:6379/0"
    assert config.schedule_store == "redis://localhost:6379/0"
    text = "broker: memory://\nresult_backend: postgresql://db/app\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.schedule_store == "postgresql://db/app"


def test_stem_config_names_the_file_else_stem_yaml_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "namespace: from-env\n", name="conf/other.yaml")
    write(tmp_path, "namespace: from-cwd\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(env={"STEM_CONFIG": "conf/other.yaml"}).namespace == "from-env"
    assert load_config(env={}).namespace == "from-cwd"


def test_missing_file_suggests_stemrun_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(env={})
    message = str(caught.value)
    assert message.startswith("stem.yaml: cannot read config: No such file or directory")
    assert "stemrun init" in message


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    text = """\
tasks:
  a: &defaults {handler: "m:a", max_retries: 9, priority: 4}
  b: {<<: *defaults, handler: "m:b", priority: 1}
"""
    config = load_config(write(tmp_path, text), env={})
    assert (config.tasks["a"].max_retries, config.tasks["a"].priority) == (9, 4)
    assert (config.tasks["b"].max_retries, config.tasks["b"].priority) == (9, 1)
    assert config.tasks["b"].handler == "m:b"


def test_config_from_mapping_validates_the_same_way(tmp_path: Path) -> None:
    data = {"tasks": {"t": {"handler": "m:f", "queue": "nope"}}}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, root_dir=tmp_path, env={})
    assert caught.value.problems == [
        "<config>: tasks.t.queue: queue 'nope' is not declared under queues (declared: default)"
    ]
    config = config_from_mapping({"tasks": {"t": {"handler": "m:f"}}}, root_dir=tmp_path, env={})
    assert config.path is None
    assert config.broker == f"sqlite:///{tmp_path}/.stem/stem.db"
