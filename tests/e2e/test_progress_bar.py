"""`enqueue --wait` draws a progress bar on a terminal and keeps stdout plain JSON."""

from __future__ import annotations

import json
import os
import pty
import subprocess

from tests.e2e.conftest import STEMRUN, Project

PROGRESS_TASK = """

def crunch(ctx: TaskContext, steps: int = 5) -> int:
    for step in range(steps):
        time.sleep(0.3)
        ctx.progress((step + 1) / steps, stage=f"step {step + 1}")
    return steps
"""


def test_bar_on_a_terminal_json_on_stdout(project: Project) -> None:
    with (project.root / "e2etasks.py").open("a") as module:
        module.write(PROGRESS_TASK)
    yaml = (
        (project.root / "stem.yaml")
        .read_text()
        .replace("tasks:\n", 'tasks:\n  crunch: {handler: "e2etasks:crunch"}\n', 1)
    )
    (project.root / "stem.yaml").write_text(yaml)
    project.start("worker")

    leader, follower = pty.openpty()
    done = subprocess.run(
        [STEMRUN, "enqueue", "crunch", "--wait", "--timeout", "30s"],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)

    assert done.returncode == 0
    assert json.loads(done.stdout)["result"] == 5
    text = screen.decode(errors="replace")
    assert "%" in text and "step" in text, text
