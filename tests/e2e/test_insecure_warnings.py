"""Insecure settings are never silent, and broken TLS settings say what to fix.

- a signing secret written into stem.yaml: `validate`, `worker` and `up` warn, naming the key id
  and never echoing the secret;
- `tls.allow_insecure`: `validate`, `health` and the worker warn every time it is in effect;
- a worker without signing that receives signed messages runs them, and warns once;
- a missing certificate file: exit 2 naming the path (not "Redis is unreachable", exit 1), and
  `validate` checks every tls path;
- `rediss://` against a plain-text port: the docs/tls.md diagnostics, not a bare timeout.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from stemrun.signing import generate_hmac_secret
from tests import services
from tests.e2e.conftest import STEMRUN, Project, wait_until
from tests.e2e.test_tls_redis import TlsRedis, needs_stores, tls_redis  # noqa: F401 (a fixture)

SECRET = generate_hmac_secret()
LITERAL = "the HMAC secret of key 'primary' is written in the file"
INSECURE = "tls.allow_insecure: verification is off"
IGNORED = "received a signed message (key id 'primary') but this worker has no signing configured"

BASE = """\
version: 1
broker: sqlite:///.stem/stem.db
queues:
  default: {}
tasks:
  record: {handler: "e2etasks:record"}
workers:
  default: {queues: [default], concurrency: 1, pool: thread}
"""


def configure(project: Project, text: str) -> None:
    (project.root / "stem.yaml").write_text(text)


def with_signing(key: str) -> str:
    """BASE with an HMAC key `primary` whose value is written as `key`."""
    return BASE + f'signing:\n  keys: {{primary: "{key}"}}\n  active_key: primary\n'


def with_tls(broker: str, **tls: object) -> str:
    """BASE on `broker` with a tls section of `tls`."""
    lines = [
        f"  {key}: {str(value).lower() if isinstance(value, bool) else value}"
        for key, value in tls.items()
    ]
    return BASE.replace("sqlite:///.stem/stem.db", broker) + "tls:\n" + "\n".join(lines) + "\n"


def run(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A stemrun command with extra environment variables."""
    return subprocess.run(
        [STEMRUN, *args],
        cwd=project.root,
        env={**project.env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if "warning" in line]


# -- a secret written into stem.yaml -------------------------------------------------------------


def test_validate_warns_about_a_literal_secret_without_showing_it(project: Project) -> None:
    configure(project, with_signing(SECRET))
    done = project.run("validate")
    assert done.returncode == 0, done.stderr
    assert warnings_in(done.stderr) == [
        f"warning: stem.yaml:10:19: signing.keys.primary: {LITERAL}; keep it in the environment "
        "instead: a ${VAR} reference without a default, or STEM_SIGNING_KEYS "
        '(docs/security.md, "Warnings")'
    ]
    assert SECRET not in done.stdout + done.stderr
    summary = project.run_json("validate", "--json")
    assert [LITERAL in w for w in summary["warnings"]] == [True]


@pytest.mark.parametrize(
    ("value", "env", "warned"),
    [
        ("${STEM_TEST_KEY}", {"STEM_TEST_KEY": SECRET}, False),
        ("${STEM_TEST_KEY:-}", {"STEM_TEST_KEY": SECRET}, False),
        (f"${{STEM_TEST_KEY:-{SECRET}}}", {"STEM_TEST_KEY": SECRET}, True),  # the default is one
        (SECRET, {"STEM_SIGNING_KEYS": f"primary:{SECRET}"}, False),  # not in effect
    ],
    ids=["reference", "reference, empty default", "default in the file", "replaced by env"],
)
def test_only_secrets_in_effect_from_the_file_are_warned_about(
    project: Project, value: str, env: dict[str, str], warned: bool
) -> None:
    configure(project, with_signing(value))
    done = run(project, "validate", **env)
    assert done.returncode == 0, done.stderr
    assert (LITERAL in done.stderr) is warned
    assert SECRET not in done.stdout + done.stderr


def test_a_worker_and_up_warn_about_a_literal_secret(project: Project) -> None:
    configure(project, with_signing(SECRET))
    worker = project.run("worker", "--burst")
    assert worker.returncode == 0, worker.stderr
    assert [LITERAL in line for line in warnings_in(worker.stderr)] == [True]
    up = project.start("up", "--no-beat")
    wait_until(lambda: "consuming default" in project.logs(), 30, "no worker:\n" + project.logs())
    # Once, by the supervisor, naming stem.yaml (its workers load a frozen copy of it).
    assert [line.split(" warning ", 1)[1] for line in warnings_in(project.logs())] == [
        "stemrun.config: stem.yaml:10:19: signing.keys.primary: " + LITERAL + "; keep it in the "
        "environment instead: a ${VAR} reference without a default, or STEM_SIGNING_KEYS "
        '(docs/security.md, "Warnings")'
    ]
    second = with_signing(SECRET).replace("primary", "second")
    configure(project, second.replace("queues:\n", "queues:\n  extra: {}\n"))
    rotated = "the HMAC secret of key 'second' is written in the file"
    wait_until(lambda: rotated in project.logs(), 30, "no warning on reload:\n" + project.logs())
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0
    assert SECRET not in project.logs()


# -- a worker without signing, fed signed messages -------------------------------------------


def test_a_worker_without_signing_warns_once_about_signed_messages(project: Project) -> None:
    configure(project, BASE)
    keys = {"STEM_SIGNING_KEYS": f"primary:{SECRET}", "STEM_SIGNING_ACTIVE_KEY": "primary"}
    for n in range(3):
        assert run(project, "enqueue", "record", "--args", f'{{"n": {n}}}', **keys).returncode == 0
    worker = project.run("worker", "--burst")
    assert worker.returncode == 0, worker.stderr
    assert sorted(project.ledger_lines()) == ["0", "1", "2"], "signed messages still run"
    assert [IGNORED in line for line in warnings_in(worker.stderr)] == [True]
    assert SECRET not in worker.stderr


def test_a_worker_without_signing_is_quiet_about_unsigned_messages(project: Project) -> None:
    configure(project, BASE)
    assert project.run("enqueue", "record", "--args", '{"n": 1}').returncode == 0
    worker = project.run("worker", "--burst")
    assert worker.returncode == 0 and project.ledger_lines() == ["1"]
    assert warnings_in(worker.stderr) == []


# -- allow_insecure -----------------------------------------------------------------------------


@needs_stores
def test_allow_insecure_warns_in_validate_health_and_the_worker(
    project: Project,
    tls_redis: TlsRedis,  # noqa: F811 (the fixture imported above)
) -> None:
    certs = tls_redis.certs
    configure(
        project,
        with_tls(
            f"rediss://localhost:{tls_redis.port}/0",
            client_cert=certs / "client.crt",
            client_key=certs / "client.key",
            allow_insecure=True,
        ).replace("version: 1\n", f"version: 1\nnamespace: {services.unique_namespace()}\n"),
    )
    expected = (
        f"{INSECURE}: TLS to the broker, result backend, schedule store is encrypted but the "
        "server's certificate and host name are not checked"
    )
    for command in (["validate"], ["health"], ["worker", "--burst"]):
        done = project.run(*command)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [expected in line for line in warnings_in(done.stderr)] == [True], command
    by_env = run(project, "health", STEM_TLS_ALLOW_INSECURE="false")
    assert by_env.returncode == 1 and INSECURE not in by_env.stderr  # verification is back on


def test_allow_insecure_without_a_tls_store_is_not_in_effect(project: Project) -> None:
    configure(project, BASE + "tls:\n  allow_insecure: true\n")
    done = project.run("validate")
    assert done.returncode == 0 and warnings_in(done.stderr) == []


# -- certificate files --------------------------------------------------------------------------


def test_a_missing_ca_file_is_a_config_error_naming_the_path(project: Project) -> None:
    missing = project.root / "certs" / "ca.crt"
    configure(project, with_tls("rediss://localhost:6380/0", ca_cert="certs/ca.crt"))
    expected = (
        f"tls.ca_cert (STEM_TLS_CA_CERT): {missing}: no such file (relative paths resolve "
        "against the directory of stem.yaml)"
    )
    for command in (["enqueue", "record"], ["health"], ["worker", "--burst"]):
        done = project.run(*command)
        assert done.returncode == 2, (command, done.stdout + done.stderr)
        assert expected in done.stderr, command
        assert "unreachable" not in done.stderr
    done = project.run("validate")
    assert done.returncode == 2
    assert done.stderr.strip() == f"stem.yaml:10:12: tls.ca_cert: {missing}: no such file " + (
        "(relative paths resolve against the directory of stem.yaml)"
    )


def test_validate_checks_every_tls_path_even_without_a_tls_store(project: Project) -> None:
    (project.root / "ca.crt").write_text("not a certificate\n")
    configure(
        project,
        with_tls(
            "sqlite:///.stem/stem.db",
            ca_cert="ca.crt",
            client_cert="client.crt",
            client_key="/nowhere/client.key",
        ),
    )
    done = project.run("validate")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"stem.yaml:11:16: tls.client_cert: {project.root}/client.crt: no such file (relative "
        "paths resolve against the directory of stem.yaml)",
        "stem.yaml:12:15: tls.client_key: /nowhere/client.key: no such file (relative paths "
        "resolve against the directory of stem.yaml)",
    ]
    (project.root / "client.crt").write_text("x")
    (project.root / "client.key").write_text("x")
    done = run(project, "validate", STEM_TLS_CLIENT_KEY=str(project.root / "client.key"))
    assert done.returncode == 2
    root = project.root
    assert done.stderr.splitlines() == [
        f"stem.yaml:10:12: tls.ca_cert: {root}/ca.crt: not a PEM CA certificate (no certificate "
        "or crl found)",
        f"env STEM_TLS_CLIENT_KEY: tls.client_key: {root}/client.crt with key {root}/client.key: "
        "not a usable certificate and key (pem lib)",
    ]


@needs_stores
def test_validate_refuses_a_client_key_that_is_not_the_certificates(
    project: Project,
    tls_redis: TlsRedis,  # noqa: F811 (the fixture imported above)
) -> None:
    other = tls_redis.other_ca.parent
    configure(
        project,
        with_tls(
            f"rediss://localhost:{tls_redis.port}/0",
            ca_cert=tls_redis.certs / "ca.crt",
            client_cert=tls_redis.certs / "client.crt",
            client_key=other / "client.key",
        ),
    )
    done = project.run("validate")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"stem.yaml:12:15: tls.client_key: {tls_redis.certs / 'client.crt'} with key "
        f"{other / 'client.key'}: not a usable certificate and key (key values mismatch)"
    ), done.stderr


# -- a plain-text port --------------------------------------------------------------------------


@needs_stores
def test_rediss_against_a_plain_port_says_the_port_does_not_speak_tls(project: Project) -> None:
    plain = services.require_redis()
    host_port = plain.split("//", 1)[1].split("/", 1)[0]
    configure(project, BASE.replace("sqlite:///.stem/stem.db", f"rediss://{host_port}/0"))
    expected = (
        f"TLS handshake with broker at {host_port} failed: the port does not speak TLS (it "
        "answered a plain-text PING): use redis:// (not rediss://) for a plain-text port, or the "
        "server's TLS port (CA: system; client cert: not provided); set "
        "STEM_TLS_ALLOW_INSECURE=true to bypass verification temporarily"
    )
    done = project.run("enqueue", "record")
    assert done.returncode == 1
    assert done.stderr.strip().endswith(f"error: {expected}"), done.stderr
    health = project.run_json("health", "--json")
    assert {check["error"] for check in health["checks"]} == {expected}
    assert all(check["tls_failure"] for check in health["checks"])
