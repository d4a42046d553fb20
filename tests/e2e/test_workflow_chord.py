"""A 50-member chord across worker processes, one SIGKILLed mid-run; a member failing for good."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

from tests.e2e.conftest import Project, wait_until
from tests.e2e.test_workflow_chain import CHORD_SIZE, wf

__all__ = ["wf"]  # the fixture, shared with the chain tests


def test_the_callback_runs_once_with_every_result_despite_a_killed_worker(wf: Project) -> None:
    started = wf.run("workflow", "run", "thumbnails", "--args", '{"sleep": 0.1}')
    assert started.returncode == 0, started.stderr
    chord_id = started.stdout.strip()
    doomed = wf.start("worker", "-n", "doomed")
    wf.start("worker", "-n", "survivor")

    def resized() -> int:
        return sum(line.startswith("resize") for line in wf.ledger_lines())

    wait_until(lambda: resized() >= 10, 60, "the members never started:\n" + wf.logs()[-2000:])
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    wf.start("worker", "-n", "replacement")

    done = wf.run("status", chord_id, "--wait", "--timeout", "90s", "--json", timeout=120)
    assert done.returncode == 0, done.stdout + wf.logs()[-3000:]
    final = json.loads(done.stdout)
    assert final["state"] == "succeeded" and final["result"] == CHORD_SIZE
    assert (final["total"], final["completed"], final["succeeded"]) == (CHORD_SIZE,) * 3
    publishes = [line for line in wf.ledger_lines() if line.startswith("publish ")]
    assert len(publishes) == 1, "the callback ran more than once"
    expected = [f"img@{n}" for n in range(CHORD_SIZE)]
    assert json.loads(publishes[0].removeprefix("publish ")) == expected
    runs = Counter(line for line in wf.ledger_lines() if line.startswith("resize"))
    print(f"members run twice (in flight at the kill): {sum(c > 1 for c in runs.values())}")
    assert set(runs) == {f"resize {n}" for n in range(CHORD_SIZE)}


def test_a_member_failing_after_its_retries_fails_the_chord(wf: Project) -> None:
    wf.start("worker")
    done = wf.run("workflow", "run", "thumbnails", "--args", '{"fail_on": 7}', "--wait")
    assert done.returncode == 1, done.stderr
    final = json.loads(done.stdout)
    chord_id = final["id"]
    assert final["state"] == "failed"
    assert final["meta"]["failed_step"] == f"{chord_id}.7"
    assert f"{chord_id}.7" in final["error"]["message"]
    assert final["callback"]["state"] == "pending"
    wait_until(
        lambda: sum(line == "resize 7 failed" for line in wf.ledger_lines()) == 3,
        10,
        "member 7 did not use its 2 retries",
    )
    member = wf.run_json("status", f"{chord_id}.7", "--json")
    assert member["state"] == "failed" and member["attempt"] == 2
    wait_until(
        lambda: wf.run_json("status", chord_id, "--json")["completed"] == CHORD_SIZE,
        60,
        "the other members did not finish",
    )
    assert not any(line.startswith("publish") for line in wf.ledger_lines())
