"""Ed25519: workers holding only public keys verify everything, including retries and replays."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Project
from tests.e2e.test_signing_hmac import SignedProject, generated

EXTRA_TASKS = '''

def once(ctx: TaskContext) -> str:
    """Fails on its first attempt only."""
    with open(LEDGER, "a") as ledger:
        ledger.write(f"once attempt {ctx.attempt}\\n")
    if ctx.attempt == 0:
        raise ConnectionError("first attempt fails")
    return "second time lucky"


def spawn(ctx: TaskContext) -> str:
    return ctx.enqueue("record", args={"n": 99})
'''
EXTRA_YAML = """
  once:
    handler: "e2etasks:once"
    max_retries: 1
    retry_backoff: {initial: 50ms, jitter: false}
  spawn: {handler: "e2etasks:spawn", max_retries: 0}
"""


@pytest.fixture
def signed(project: Project) -> SignedProject:
    with (project.root / "e2etasks.py").open("a") as module:
        module.write(EXTRA_TASKS)
    yaml = (project.root / "stem.yaml").read_text()
    (project.root / "stem.yaml").write_text(yaml.replace("tasks:\n", "tasks:" + EXTRA_YAML, 1))
    return SignedProject(root=project.root, processes=project.processes)


def public_only(producer: dict[str, str]) -> dict[str, str]:
    keep = ("STEM_SIGNING_ALGORITHM", "STEM_SIGNING_PUBLIC_KEYS")
    return {name: producer[name] for name in keep}


def test_verify_only_workers_run_retries_and_replays(signed: SignedProject) -> None:
    producer = generated(signed, "--algorithm", "ed25519")
    signed.keys = public_only(producer)
    signed.start("worker")

    signed.keys = producer
    retried = signed.run("enqueue", "once", "--wait", "--timeout", "30s")
    assert retried.returncode == 0, retried.stdout + retried.stderr + signed.logs()
    assert signed.ledger_lines() == ["once attempt 0", "once attempt 1"]

    flaky = signed.run("enqueue", "flaky").stdout.strip()
    assert signed.run("status", flaky, "--wait", "--timeout", "30s").returncode == 1
    assert signed.dead()[flaky]["reason"] == "max-retries-exhausted"  # 3 attempts, all verified
    (signed.root / "fixed").touch()
    replay = signed.run("dlq", "replay", "--id", flaky, "--yes")
    assert replay.returncode == 0, replay.stderr
    final = signed.run_json("status", flaky, "--wait", "--timeout", "30s", "--json")
    assert final["state"] == "succeeded" and final["meta"]["replays"] == 1, signed.logs()
    assert signed.ledger_lines().count("flaky attempt 0") == 2  # the replay ran, verified
    assert "signature-invalid" not in signed.logs()


def test_child_tasks_are_signed_and_verify_only_workers_cannot_sign_them(
    signed: SignedProject,
) -> None:
    producer = generated(signed, "--algorithm", "ed25519")
    signed.keys = producer  # this worker holds the private key: its ctx.enqueue signs
    worker = signed.start("worker")
    spawned = signed.run_json("enqueue", "spawn", "--wait", "--timeout", "30s")
    child = signed.run_json("status", spawned["result"], "--wait", "--timeout", "30s", "--json")
    assert child["state"] == "succeeded" and child["parent_id"] == spawned["id"]
    signed.stop(worker)

    signed.keys = public_only(producer)
    signed.start("worker")
    signed.keys = producer
    refused = signed.run_json("enqueue", "spawn", "--wait", "--timeout", "30s")
    assert refused["state"] == "failed"
    assert refused["error"]["type"] == "SigningConfigError"
    assert "has only a public key" in refused["error"]["message"]
