"""Signed envelopes with HMAC-SHA256, as a user runs them: tampering, rotation, bad configs.

Keys come from `stemrun keys generate`, pasted into each process's environment as a user would.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from stemrun.backends.record import StatusRecord
from stemrun.brokers.base import Message
from stemrun.client import Stem
from stemrun.config import load_config
from stemrun.envelope import Envelope, encode
from stemrun.signing import generate_ed25519_pair, generate_hmac_secret, signer_for
from stemrun.state import TaskState
from tests.e2e.conftest import Project, wait_until

Tamper = Callable[[bytes], bytes]
PUBLIC_ONLY = "a:" + generate_ed25519_pair()[0]


@dataclass
class SignedProject(Project):
    """A project whose commands run with `keys` (STEM_SIGNING_* variables) in their environment."""

    keys: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.keys}

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, self.logs()[-2000:]

    def stem(self) -> Stem:
        """A client in the test process, with this project's config and current keys."""
        return Stem(load_config(self.root / "stem.yaml", env=self.env()))

    def dead(self) -> dict[str, dict[str, Any]]:
        return {entry["id"]: entry for entry in self.run_json("dlq", "list", "--json")}


@pytest.fixture
def signed(project: Project) -> SignedProject:
    # Shares the processes list, so the `project` fixture still kills whatever is left running.
    return SignedProject(root=project.root, processes=project.processes)


def generated(proj: Project, *args: str) -> dict[str, str]:
    """`stemrun keys generate` output, parsed as a shell would read it."""
    done = proj.run("keys", "generate", *args)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def forge(proj: SignedProject, task_id: str, n: int, tamper: Tamper) -> None:
    """Publish a correctly signed `record` envelope after `tamper` changed its bytes."""
    with proj.stem() as stem:
        envelope = Envelope(id=task_id, task="record", queue="default", args={"n": n})
        body = tamper(encode(envelope, signer_for(stem.config.signing)))
        record = StatusRecord(
            id=task_id, task="record", state=TaskState.QUEUED, queue="default", args={"n": n}
        )
        stem.backend.create([record])
        stem.broker.publish([Message(id=task_id, queue="default", body=body)])


def edit(field_name: str, value: Any) -> Tamper:
    def tamper(raw: bytes) -> bytes:
        outer = json.loads(raw)
        if field_name in ("kid", "sig"):
            outer[field_name] = value
        else:
            core = json.loads(outer["core"])
            core[field_name] = value
            outer["core"] = json.dumps(core, sort_keys=True, separators=(",", ":"))
        return json.dumps(outer).encode()

    return tamper


def assert_rejected(proj: SignedProject, task_id: str, why: str) -> None:
    dead = proj.dead()[task_id]
    assert dead["reason"] == "signature-invalid"
    assert dead["error"]["type"] == "SignatureInvalid"
    assert why in dead["error"]["message"]
    # Nothing vouched for the id: the status the genuine producer wrote is left alone.
    assert proj.run_json("status", task_id, "--json")["state"] == "queued"


def tamper_and_check(proj: SignedProject) -> None:
    """Forge four ways, enqueue one genuine task, run a worker: only the genuine one runs."""
    forge(proj, "args", 2, edit("args", {"n": 666}))
    forge(proj, "task", 3, edit("task", "flaky"))
    forge(proj, "unsigned", 4, edit("sig", None))
    forge(proj, "foreign", 5, edit("kid", "intruder"))
    genuine = proj.run("enqueue", "record", "-a", "n=1").stdout.strip()
    proj.start("worker")
    wait_until(lambda: len(proj.dead()) == 4, 60, "not dead-lettered:\n" + proj.logs()[-3000:])
    assert proj.run("status", genuine, "--wait", "--timeout", "30s").returncode == 0
    for task_id, why in [
        ("args", "bad signature"),
        ("task", "bad signature"),
        ("unsigned", "missing signature"),
        ("foreign", "unknown key id 'intruder'"),
    ]:
        assert_rejected(proj, task_id, why)
    assert proj.ledger_lines() == ["1"], "a handler ran for a tampered envelope"
    secret = proj.keys["STEM_SIGNING_KEYS"].split(":", 1)[1]
    assert secret not in proj.logs() and secret not in json.dumps(proj.dead())


def test_tampered_envelopes_are_dead_lettered_and_never_run(signed: SignedProject) -> None:
    signed.keys = generated(signed)
    tamper_and_check(signed)
    # Replaying a forged dead letter does not launder it: it is rejected again.
    replay = signed.run("dlq", "replay", "--id", "args", "--yes")
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: "args" in signed.dead(), 30, "the replayed forgery never came back")
    assert_rejected(signed, "args", "bad signature")
    assert signed.ledger_lines() == ["1"]


def test_a_row_edited_in_the_sqlite_store_is_rejected(signed: SignedProject) -> None:
    signed.keys = generated(signed)
    task_id = signed.run("enqueue", "record", "-a", "n=7").stdout.strip()
    database = sqlite3.connect(signed.root / ".stem" / "stem.db")
    with database:
        [(body,)] = database.execute("SELECT body FROM stem_messages WHERE id = ?", (task_id,))
        evil = edit("args", {"n": 8})(bytes(body))
        database.execute("UPDATE stem_messages SET body = ? WHERE id = ?", (evil, task_id))
    database.close()
    signed.start("worker")
    wait_until(lambda: task_id in signed.dead(), 60, "not dead-lettered:\n" + signed.logs())
    assert_rejected(signed, task_id, "bad signature")
    assert signed.ledger_lines() == []


def test_key_rotation(signed: SignedProject) -> None:
    key_a, key_b = generated(signed, "--key-id", "a"), generated(signed, "--key-id", "b")
    both = f"{key_a['STEM_SIGNING_KEYS']},{key_b['STEM_SIGNING_KEYS']}"
    worker_keys = {"STEM_SIGNING_KEYS": both}  # a worker needs no active key: it only verifies
    signed.keys = worker_keys
    worker = signed.start("worker")

    def enqueue(active: str, n: int, *wait: str) -> str:
        signed.keys = {"STEM_SIGNING_KEYS": both, "STEM_SIGNING_ACTIVE_KEY": active}
        done = signed.run("enqueue", "record", "-a", f"n={n}", *wait)
        assert done.returncode == 0, done.stderr + signed.logs()
        return done.stdout.strip()

    enqueue("a", 1, "--wait", "--timeout", "30s")
    enqueue("b", 2, "--wait", "--timeout", "30s")  # the producer switched to B: both run
    signed.stop(worker)

    old = enqueue("a", 3)  # still queued when A is removed from the workers' ring
    fresh = enqueue("b", 4)
    signed.keys = {"STEM_SIGNING_KEYS": key_b["STEM_SIGNING_KEYS"]}
    signed.start("worker")
    assert signed.run("status", fresh, "--wait", "--timeout", "30s").returncode == 0
    wait_until(lambda: old in signed.dead(), 30, "A-signed task not rejected:\n" + signed.logs())
    assert_rejected(signed, old, "unknown key id 'a'")
    assert signed.ledger_lines() == ["1", "2", "4"]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            {"STEM_SIGNING_KEYS": "a:c2VjcmV0", "STEM_SIGNING_ACTIVE_KEY": "z"},
            "active key 'z' is not one of the hmac-sha256 keys",
        ),
        (
            {
                "STEM_SIGNING_ALGORITHM": "ed25519",
                "STEM_SIGNING_PUBLIC_KEYS": PUBLIC_ONLY,
                "STEM_SIGNING_ACTIVE_KEY": "a",
            },
            "ed25519 active key 'a' has only a public key",
        ),
    ],
)
def test_a_producer_with_incomplete_signing_refuses_to_enqueue(
    signed: SignedProject, keys: dict[str, str], problem: str
) -> None:
    signed.keys = keys
    done = signed.run("enqueue", "record", "-a", "n=1", "--id", "refused")
    assert done.returncode == 2 and problem in done.stderr, done.stderr
    assert done.stdout == ""
    signed.keys = {}
    assert signed.run_json("status", "refused", "--json")["state"] == "unknown"
    with signed.stem() as stem:
        assert stem.broker.stats(["default"])["default"].pending == 0


def test_validate_reports_incomplete_signing(signed: SignedProject) -> None:
    signed.keys = {"STEM_SIGNING_ALGORITHM": "ed25519", "STEM_SIGNING_PUBLIC_KEYS": PUBLIC_ONLY}
    verify_only = signed.run("validate", "--json")
    assert verify_only.returncode == 0, verify_only.stderr
    assert json.loads(verify_only.stdout)["signing_mode"] == "verify-only"
    assert "verify-only" in verify_only.stderr and "has only a public key" in verify_only.stderr

    private = "b:" + generate_hmac_secret()  # 32 random bytes: a valid ed25519 private key
    signed.keys |= {"STEM_SIGNING_PRIVATE_KEYS": private, "STEM_SIGNING_ACTIVE_KEY": "a"}
    broken = signed.run("validate")
    assert broken.returncode == 2 and "has only a public key" in broken.stderr, broken.stderr

    signed.keys = generated(signed)
    assert signed.run_json("validate", "--json")["signing_mode"] == "sign"


def test_a_forged_message_never_touches_the_genuine_task_with_its_id(
    signed: SignedProject,
) -> None:
    """An unsigned message carrying a genuine task's id is dead-lettered without writing that
    task's status: the delayed genuine task still runs later, the queued one keeps its result."""
    signed.keys = generated(signed)
    delayed = signed.run("enqueue", "record", "-a", "n=1", "--countdown", "3s").stdout.strip()
    queued = signed.run("enqueue", "record", "-a", "n=2").stdout.strip()
    with signed.stem() as stem:
        for task_id in (delayed, queued):
            forged = Envelope(id=task_id, task="record", queue="default", args={"n": 666})
            stem.broker.publish([Message(id=task_id, queue="default", body=encode(forged))])
    signed.start("worker")
    for task_id in (delayed, queued):
        done = signed.run("status", task_id, "--wait", "--timeout", "30s", "--json")
        assert done.returncode == 0, done.stdout + signed.logs()[-2000:]
        assert json.loads(done.stdout)["state"] == "succeeded"
    assert sorted(signed.ledger_lines()) == ["1", "2"], "the forged args ran"
    assert {signed.dead()[i]["reason"] for i in (delayed, queued)} == {"signature-invalid"}
