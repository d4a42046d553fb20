"""`${VAR}` interpolation and the STEM_* overlay (environment > stem.yaml > defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemrun.config import load_config
from stemrun.config.model import Config
from stemrun.errors import ConfigError

KEY = "c2VjcmV0"


def load(tmp_path: Path, text: str, env: dict[str, str]) -> Config:
    (tmp_path / "stem.yaml").write_text(text, encoding="utf-8")
    return load_config(tmp_path / "stem.yaml", env=env)


def problems(tmp_path: Path, text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    return [line.removeprefix(f"{tmp_path}/") for line in caught.value.problems]


def test_references_are_replaced_inside_longer_strings(tmp_path: Path) -> None:
    text = "broker: redis://:${REDIS_PASSWORD}@${REDIS_HOST:-localhost}:6379/0\n"
    config = load(tmp_path, text, {"REDIS_PASSWORD": "pw"})
    assert config.broker == "redis://:pw@localhost:6379/0"
    config = load(tmp_path, text, {"REDIS_PASSWORD": "pw", "REDIS_HOST": "cache"})
    assert config.broker == "redis://:pw@cache:6379/0"


def test_default_is_used_when_the_variable_is_empty(tmp_path: Path) -> None:
    assert load(tmp_path, "namespace: ${NS:-stem}\n", {"NS": ""}).namespace == "stem"


def test_double_dollar_writes_a_literal_reference(tmp_path: Path) -> None:
    assert load(tmp_path, "namespace: $${NS}\n", {}).namespace == "${NS}"


def test_unset_variable_is_reported_at_its_value(tmp_path: Path) -> None:
    text = """\
version: 1
namespace: app
tasks:
  t: {handler: 'm:f'}
signing:
  keys:
    primary: ${STEM_KEY_PRIMARY}
"""
    assert problems(tmp_path, text, {}) == [
        "stem.yaml:7:14: signing.keys.primary: environment variable STEM_KEY_PRIMARY is not set"
        " (use ${STEM_KEY_PRIMARY:-default} to give a default)"
    ]


def test_malformed_reference_is_reported(tmp_path: Path) -> None:
    assert problems(tmp_path, "namespace: ${bad name}\n", {}) == [
        "stem.yaml:1:12: namespace: malformed environment reference '${bad name}':"
        " write ${NAME} or ${NAME:-default} (or $${ for a literal '${')"
    ]


def test_interpolated_numbers_and_booleans_follow_the_schema(tmp_path: Path) -> None:
    text = """\
tasks:
  t: {handler: 'm:f', max_retries: '${RETRIES:-4}', soft_time_limit: '${SOFT:-10}'}
tls: {allow_insecure: '${INSECURE:-false}'}
signing: {keys: {k: '${KEY}'}}
"""
    config = load(tmp_path, text, {"KEY": KEY, "SOFT": "2m", "INSECURE": "1"})
    assert config.tasks["t"].max_retries == 4
    assert config.tasks["t"].soft_time_limit_s == 120.0
    assert config.tls is not None and config.tls.allow_insecure is True
    assert config.signing is not None and config.signing.keys == {"k": KEY}
    assert problems(tmp_path, text, {"KEY": KEY, "RETRIES": "many"}) == [
        "stem.yaml:2:36: tasks.t.max_retries: expected an integer, got 'many'"
    ]


def test_numeric_strings_stay_strings_where_strings_are_expected(tmp_path: Path) -> None:
    text = """\
namespace: ${NS}
tasks: {t: {handler: 'm:f'}}
schedules:
  s: {task: t, spec: 'every:1s', args: {n: '${N}'}}
"""
    config = load(tmp_path, text, {"NS": "42", "N": "7"})
    assert config.namespace == "42"
    assert config.schedules["s"].args == {"n": "7"}


def test_stem_variables_override_the_file(tmp_path: Path) -> None:
    text = """\
broker: sqlite:///from-file.db
default_queue: main
default_max_retries: 1
prefetch_multiplier: 1
queues: {main: {}, other: {}}
workers: {g: {}}
"""
    env = {
        "STEM_BROKER_URL": "redis://broker:6379/0",
        "STEM_RESULT_BACKEND_URL": "postgresql://db/app",
        "STEM_SCHEDULE_STORE_URL": "sqlite:///sched.db",
        "STEM_DEFAULT_QUEUE": "other",
        "STEM_PREFETCH_MULTIPLIER": "8",
        "STEM_DEFAULT_MAX_RETRIES": "0",
    }
    config = load(tmp_path, text, env)
    assert config.broker == "redis://broker:6379/0"
    assert config.result_backend == "postgresql://db/app"
    assert config.schedule_store == f"sqlite:///{tmp_path}/sched.db"
    assert config.default_queue == "other"
    assert (config.prefetch_multiplier, config.workers["g"].prefetch_multiplier) == (8, 8)
    assert config.default_max_retries == 0


def test_file_wins_over_defaults_and_empty_variables_are_ignored(tmp_path: Path) -> None:
    config = load(tmp_path, "prefetch_multiplier: 3\n", {"STEM_PREFETCH_MULTIPLIER": ""})
    assert config.prefetch_multiplier == 3
    assert load(tmp_path, "{}\n", {}).prefetch_multiplier == 2


def test_broker_from_env_becomes_the_default_backend(tmp_path: Path) -> None:
    config = load(tmp_path, "{}\n", {"STEM_BROKER_URL": "redis://r:6379/1"})
    assert config.result_backend == config.schedule_store == "redis://r:6379/1"


def test_signing_variables_create_the_section(tmp_path: Path) -> None:
    env = {
        "STEM_SIGNING_KEYS": f"old:{KEY}, new:{KEY}",
        "STEM_SIGNING_ACTIVE_KEY": "new",
    }
    signing = load(tmp_path, "{}\n", env).signing
    assert signing is not None
    assert signing.algorithm == "hmac-sha256"
    assert signing.keys == {"old": KEY, "new": KEY}
    assert signing.active_key == "new"


def test_ed25519_variables(tmp_path: Path) -> None:
    key = "A" * 43 + "="  # 32 zero bytes
    env = {
        "STEM_SIGNING_ALGORITHM": "ed25519",
        "STEM_SIGNING_PUBLIC_KEYS": f"k1:{key}",
        "STEM_SIGNING_PRIVATE_KEYS": f"k1:{key}",
    }
    text = f"signing: {{keys: {{k0: '{KEY}'}}}}\n"
    signing = load(tmp_path, text, env).signing
    assert signing is not None
    assert (signing.algorithm, signing.active_key) == ("ed25519", "k1")
    assert signing.public_keys == signing.private_keys == {"k1": key}


def test_tls_variables_create_the_section_and_resolve_paths(tmp_path: Path) -> None:
    env = {
        "STEM_TLS_CA_CERT": "certs/ca.crt",
        "STEM_TLS_CLIENT_CERT": "/etc/stem/client.crt",
        "STEM_TLS_CLIENT_KEY": "certs/client.key",
        "STEM_TLS_ALLOW_INSECURE": "true",
    }
    tls = load(tmp_path, "tls: {allow_insecure: false}\n", env).tls
    assert tls is not None
    assert tls.ca_cert == tmp_path / "certs/ca.crt"
    assert tls.client_cert == Path("/etc/stem/client.crt")
    assert tls.client_key == tmp_path / "certs/client.key"
    assert tls.allow_insecure is True
    assert load(tmp_path, "{}\n", {"STEM_TLS_ALLOW_INSECURE": "0"}).tls is not None


def test_bad_variable_values_name_the_variable(tmp_path: Path) -> None:
    env = {
        "STEM_PREFETCH_MULTIPLIER": "abc",
        "STEM_DEFAULT_MAX_RETRIES": "-1",
        "STEM_SIGNING_ALGORITHM": "rsa",
        "STEM_SIGNING_KEYS": f"a:{KEY},bad",
        "STEM_TLS_ALLOW_INSECURE": "yes",
    }
    assert problems(tmp_path, "{}\n", env) == [
        "env STEM_DEFAULT_MAX_RETRIES: default_max_retries: expected an integer >= 0, got '-1'",
        "env STEM_PREFETCH_MULTIPLIER: prefetch_multiplier: expected an integer >= 1, got 'abc'",
        "env STEM_SIGNING_ALGORITHM: signing.algorithm: must be one of: hmac-sha256, ed25519"
        " (got 'rsa')",
        "env STEM_SIGNING_KEYS: signing.keys: item 2 is not of the form id:base64"
        " (write id:base64,id2:base64)",
        "env STEM_TLS_ALLOW_INSECURE: tls.allow_insecure: expected true, 1, false or 0, got 'yes'",
    ]


def test_problem_in_an_env_value_names_the_variable(tmp_path: Path) -> None:
    env = {"STEM_SIGNING_KEYS": f"a:{KEY}", "STEM_SIGNING_ACTIVE_KEY": "b"}
    assert problems(tmp_path, "{}\n", env) == [
        "env STEM_SIGNING_ACTIVE_KEY: signing.active_key: active key 'b' is not one of the"
        " hmac-sha256 keys in signing.keys (a)"
    ]


def test_variable_overriding_a_reference_makes_the_reference_irrelevant(tmp_path: Path) -> None:
    text = "broker: redis://:${REDIS_PASSWORD}@cache:6379/0\n"
    config = load(tmp_path, text, {"STEM_BROKER_URL": "memory://"})
    assert config.broker == "memory://"
