"""Cross-reference checks: queues, tasks, handlers, time limits, time zones, signing keys."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from stemrun.config import load_config
from stemrun.errors import ConfigError

ED25519_KEY = base64.b64encode(bytes(32)).decode()


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "stem.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "stem.yaml", env=env or {})
    return [line.removeprefix(f"{tmp_path}/") for line in caught.value.problems]


def test_undeclared_queues_are_reported_where_they_are_named(tmp_path: Path) -> None:
    text = """\
queues: {default: {}, emails: {}}
tasks:
  t: {handler: 'myapp.tasks:send', queue: email}
workers:
  g: {queues: [default, mails]}
schedules:
  s: {task: t, spec: 'every:1s', queue: nope}
"""
    assert problems(tmp_path, text) == [
        "stem.yaml:3:43: tasks.t.queue: queue 'email' is not declared under queues"
        " (did you mean 'emails'?)",
        "stem.yaml:5:25: workers.g.queues[1]: queue 'mails' is not declared under queues"
        " (did you mean 'emails'?)",
        "stem.yaml:7:41: schedules.s.queue: queue 'nope' is not declared under queues"
        " (declared: default, emails)",
    ]


def test_default_queue_is_always_declared(tmp_path: Path) -> None:
    text = "default_queue: main\ntasks:\n  t: {handler: 'm:f', queue: main}\n"
    (tmp_path / "stem.yaml").write_text(text, encoding="utf-8")
    assert load_config(tmp_path / "stem.yaml", env={}).tasks["t"].queue == "main"


def test_undeclared_tasks_in_schedules_and_workflows(tmp_path: Path) -> None:
    text = """\
tasks:
  email.send: {handler: 'myapp.tasks:send'}
schedules:
  digest: {task: email.send_digest, spec: 'cron:0 8 * * *'}
workflows:
  onboarding:
    chain:
      - {task: email.send}
      - {task: profile.fetch}
  thumbs:
    chord:
      body: [{task: email.send}]
      callback: {task: image.publish}
"""
    assert problems(tmp_path, text) == [
        "stem.yaml:4:18: schedules.digest.task: task 'email.send_digest' is not declared under"
        " tasks (did you mean 'email.send'?)",
        "stem.yaml:9:16: workflows.onboarding.chain[1].task: task 'profile.fetch' is not"
        " declared under tasks (declared: email.send)",
        "stem.yaml:13:24: workflows.thumbs.chord.callback.task: task 'image.publish' is not"
        " declared under tasks (declared: email.send)",
    ]


def test_handler_form_and_time_limits(tmp_path: Path) -> None:
    text = """\
tasks:
  a: {handler: myapp.tasks.send}
  b: {handler: 'myapp.tasks:send', soft_time_limit: 30s, hard_time_limit: 10s}
"""
    assert problems(tmp_path, text) == [
        "stem.yaml:2:16: tasks.a.handler: handler 'myapp.tasks.send' must look like"
        " 'package.module:attribute'",
        "stem.yaml:3:53: tasks.b.soft_time_limit: soft_time_limit (30s) is longer than"
        " hard_time_limit (10s); the soft limit must come first",
    ]


def test_schedule_timezone_must_be_an_iana_zone(tmp_path: Path) -> None:
    text = """\
tasks: {t: {handler: 'm:f'}}
schedules:
  s: {task: t, spec: 'every:1m', timezone: Europe/Pariss}
"""
    assert problems(tmp_path, text) == [
        "stem.yaml:3:44: schedules.s.timezone: unknown time zone 'Europe/Pariss'"
        " (use an IANA name like 'Europe/Paris' or 'UTC')"
    ]


def test_hmac_active_key_must_be_one_of_the_keys(tmp_path: Path) -> None:
    text = "signing:\n  keys: {a: 'c2VjcmV0', b: 'not base64!'}\n  active_key: c\n"
    assert problems(tmp_path, text) == [
        "stem.yaml:2:28: signing.keys.b: key 'b' is not valid base64",
        "stem.yaml:3:15: signing.active_key: active key 'c' is not one of the hmac-sha256 keys"
        " in signing.keys (a, b)",
    ]


def test_signing_needs_a_key(tmp_path: Path) -> None:
    assert problems(tmp_path, "signing: {algorithm: ed25519}\n") == [
        "stem.yaml:1:1: signing: ed25519 needs at least one key in signing.public_keys"
        " or signing.private_keys"
    ]


def test_ed25519_active_key_may_be_public_only(tmp_path: Path) -> None:
    text = f"signing:\n  algorithm: ed25519\n  public_keys: {{k1: '{ED25519_KEY}'}}\n"
    (tmp_path / "stem.yaml").write_text(text, encoding="utf-8")
    signing = load_config(tmp_path / "stem.yaml", env={}).signing
    assert signing is not None
    assert (signing.algorithm, signing.active_key) == ("ed25519", "k1")
    bad = "signing:\n  algorithm: ed25519\n  private_keys: {k1: 'c2VjcmV0'}\n  active_key: k2\n"
    assert problems(tmp_path, bad) == [
        "stem.yaml:3:22: signing.private_keys.k1: ed25519 key 'k1' must be 32 raw bytes in"
        " base64, got 6 bytes",
        "stem.yaml:4:15: signing.active_key: active key 'k2' is not one of the ed25519 keys in"
        " signing.public_keys or signing.private_keys (k1)",
    ]
