"""What importing stemrun costs a fresh interpreter; prints a table.

    .venv/bin/python benchmarks/import_cost.py [--runs 15]

Each statement runs in a new `python` process (so nothing is cached in `sys.modules`), timed
inside that process around the statement alone; the table gives the median and the spread of
`--runs` processes, and how many modules the statement loaded.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys

STATEMENTS = {
    "import stemrun": "import stemrun",
    "from stemrun import Stem (a producer)": "from stemrun import Stem",
    "from stemrun import Worker": "from stemrun import Worker",
    "import stemrun.worker.child (a pool child)": "import stemrun.worker.child",
    "import stemrun.cli.app (every command)": "import stemrun.cli.app",
}

_PROBE = """
import sys, time
before = len(sys.modules)
t = time.perf_counter()
{statement}
print(time.perf_counter() - t, len(sys.modules) - before)
"""


def measure(statement: str) -> tuple[float, int]:
    """Seconds and modules loaded by `statement` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(statement=statement)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    print(f"Python {platform.python_version()} | {platform.machine()} | {runs} runs each")
    print(f"{'statement':44} {'median':>9} {'min':>9} {'max':>9} {'modules':>8}")
    for label, statement in STATEMENTS.items():
        samples = [measure(statement) for _ in range(runs)]
        times = [seconds * 1000 for seconds, _ in samples]
        modules = samples[-1][1]
        print(
            f"{label:44} {statistics.median(times):7.1f}ms {min(times):7.1f}ms "
            f"{max(times):7.1f}ms {modules:8d}"
        )


if __name__ == "__main__":
    main()
