"""Hostile stem.yaml files, as the commands that read them see them: refused, fast, bounded.

Each file is refused with `FILE:LINE:COL: message` and exit 2 by `stemrun validate` and
`stemrun schedule apply --file`, in a process whose address space is capped (a file that blew
past the cap would die with MemoryError and exit 1, not 2), and a hot reload of `stemrun up`
refuses the same files while the running generation keeps serving.
"""

from __future__ import annotations

import resource
import subprocess

import pytest

from tests.e2e.conftest import STEMRUN, Project
from tests.e2e.test_reload_refused import Up, children

#: Address space for a refusing command: stemrun itself needs ~100 MB; a bomb needs gigabytes.
MEMORY_CAP = 300 * 1024 * 1024
#: A refusal comes well within this; parsing a bomb would take minutes, or never end.
DEADLINE_S = 10

LAUGHS = "\n".join(
    [
        "version: 1",
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(
            f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "",
    ]
)

HOSTILE = {
    "billion laughs": (
        LAUGHS,
        "stem.yaml:7:8: the file holds more than 100,000 values once alias *e is expanded",
    ),
    "50,000 levels": (
        "version: 1\nx: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "stem.yaml:2:67: nested more than 64 levels deep",
    ),
    "tag on a sequence": (
        "version: 1\nqueues: {default: {}}\ntasks:\n  t:\n    handler: m:f\n"
        "    retry_on: !!python/object/apply:os.system [touch owned]\n",
        "stem.yaml:6:15: YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    "tag on a mapping": (
        "version: 1\nqueues: !!python/object/new:dict {default: {}}\n",
        "stem.yaml:2:9: YAML tag '!!python/object/new:dict' is not allowed",
    ),
}


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_capped(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """A stemrun command with its address space capped, within the deadline."""
    return subprocess.run(
        [STEMRUN, *args],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        stdin=subprocess.DEVNULL,
        preexec_fn=_capped,
    )


def refused(done: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 2 with the located refusal first on stderr, and no traceback."""
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(expected), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_validate_refuses_the_file(project: Project, case: str) -> None:
    text, expected = HOSTILE[case]
    (project.root / "stem.yaml").write_text(text)
    done = run_capped(project, "validate", "-C", str(project.root / "stem.yaml"))
    refused(done, f"{project.root}/{expected}")
    assert not (project.root / "owned").exists()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_schedule_apply_refuses_the_file(project: Project, case: str) -> None:
    text, expected = HOSTILE[case]
    (project.root / "hostile").mkdir()
    (project.root / "hostile" / "stem.yaml").write_text(text)
    done = run_capped(project, "schedule", "apply", "--file", "hostile/stem.yaml", "--yes")
    refused(done, f"hostile/{expected}")
    assert project.run("schedule", "list", "--json").returncode == 0


def test_a_hot_reload_refuses_a_bomb_and_keeps_serving(project: Project) -> None:
    up = Up(project)
    up.run_tasks(0, 5)
    workers = children(up.proc.pid)
    # Were the bomb expanded, the supervisor would die of MemoryError rather than eat the host.
    resource.prlimit(up.proc.pid, resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    for _, (text, expected) in sorted(HOSTILE.items()):
        up.save(text, expected)
    assert "is invalid; the running generation keeps going unchanged" in up.logs
    assert up.proc.poll() is None, "the supervisor died"
    assert children(up.proc.pid) == workers, "a refused reload touched the running workers"
    up.run_tasks(5, 20)
    assert up.reload_failures() == len(HOSTILE)
    assert sorted(int(n) for n in project.ledger_lines()) == list(range(25))
    up.stop()
