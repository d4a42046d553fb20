"""docs/configuration.md is generated from the schema; a key missing from it fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stemrun.config import load_schema

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_matches_the_schema() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == _generator().render(), (
        "docs/configuration.md is stale: run `.venv/bin/python scripts/config_reference.py --write`"
    )


def test_every_top_level_and_task_key_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    schema = load_schema()
    task_keys = schema["properties"]["tasks"]["additionalProperties"]["properties"]
    for key in schema["properties"]:
        assert f"| `{key}` |" in text
    for key in task_keys:
        assert f"| `tasks.<name>.{key}` |" in text
