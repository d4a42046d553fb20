"""Importing stemrun stays cheap: no heavy library loads before the code that needs it runs.

Every process-pool child and every web producer pays the import. What is checked is the cause of
the cost, the modules a fresh interpreter has loaded, never a timing (docs/architecture.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import stemrun
import stemrun.config

#: Libraries that cost tens of milliseconds each, and what needs them: the config loader (yaml,
#: jsonschema), cron schedules (croniter), ed25519 signing (cryptography), stores (redis,
#: psycopg), async handlers (asyncio).
HEAVY = ("yaml", "jsonschema", "croniter", "cryptography", "redis", "psycopg", "asyncio")


def _loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    script = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def _heavy(modules: set[str]) -> list[str]:
    return [name for name in HEAVY if name in modules]


def test_import_stemrun_loads_no_other_module_of_stemrun() -> None:
    loaded = _loaded_after("import stemrun")
    assert sorted(m for m in loaded if m.startswith("stemrun.")) == []
    assert _heavy(loaded) == []


@pytest.mark.parametrize(
    "statement",
    [
        "from stemrun import Stem",  # a web producer
        "from stemrun import Worker",
        "import stemrun.worker.child",  # a process-pool child before its first task
        "from stemrun.config import parse_duration, SCHEMA_PATH",
    ],
)
def test_common_entry_points_load_no_heavy_library(statement: str) -> None:
    assert _heavy(_loaded_after(statement)) == []


def test_a_pool_child_does_not_load_the_producer_side() -> None:
    loaded = _loaded_after("import stemrun.worker.child")
    assert {"stemrun.client", "stemrun.config.model", "stemrun.stores"} & loaded == set()


def test_every_public_name_resolves() -> None:
    for package in (stemrun, stemrun.config):
        missing = [name for name in package.__all__ if getattr(package, name, None) is None]
        assert missing == []
    assert set(stemrun.__all__) <= set(dir(stemrun))  # shell and IDE completion


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Stemm'"):
        _ = stemrun.Stemm  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'load_confg'"):
        _ = stemrun.config.load_confg  # type: ignore[attr-defined]
