"""Tampered envelopes on the Redis Streams broker are rejected like on SQLite."""

from __future__ import annotations

from tests.e2e.conftest import Project
from tests.e2e.test_signing_hmac import SignedProject, generated, tamper_and_check


def test_tampered_envelopes_on_redis_are_dead_lettered(
    project: Project, redis_url: str, redis_namespace: str
) -> None:
    yaml = (project.root / "stem.yaml").read_text()
    store = f"broker: {redis_url}\nnamespace: {redis_namespace}\n"
    (project.root / "stem.yaml").write_text(
        yaml.replace("broker: sqlite:///.stem/stem.db\n", store)
    )
    signed = SignedProject(root=project.root, processes=project.processes)
    signed.keys = generated(signed)
    tamper_and_check(signed)
    signed.stop_all()  # before the namespace's keys are deleted
