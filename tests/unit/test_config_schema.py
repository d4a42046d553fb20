"""The published JSON Schema and the starter file `stemrun init` writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema

from stemrun.config import SCHEMA_PATH, STARTER_PATH, load_config, load_schema

REPO = Path(__file__).resolve().parents[2]


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_published_schema_is_a_relative_symlink_to_the_packaged_one() -> None:
    published = REPO / "schemas" / "stem.schema.json"
    assert published.is_symlink()
    assert os.readlink(published) == "../stemrun/config/stem.schema.json"
    assert published.resolve() == SCHEMA_PATH.resolve()
    assert json.loads(published.read_text(encoding="utf-8")) == load_schema()


def _objects(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((path, node))
        for key, value in node.items():
            found.extend(_objects(value, f"{path}/{key}"))
    return found


def test_every_object_forbids_unknown_keys_and_every_key_is_described() -> None:
    for path, node in _objects(load_schema()):
        assert node.get("additionalProperties") is False, path
        for name, prop in node["properties"].items():
            assert prop.get("description"), f"{path}/properties/{name}"


def test_starter_file_is_valid_and_declares_the_example_tasks(tmp_path: Path) -> None:
    target = tmp_path / "stem.yaml"
    target.write_text(STARTER_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    config = load_config(target, env={})
    assert config.broker == f"sqlite:///{tmp_path}/.stem/stem.db"
    assert list(config.queues) == ["default", "emails"]
    assert {name: task.handler for name, task in config.tasks.items()} == {
        "hello": "tasks:hello",
        "add": "tasks:add",
        "flaky": "tasks:flaky",
    }
    flaky = config.tasks["flaky"]
    assert (flaky.max_retries, flaky.retry_backoff.initial_s) == (2, 0.1)
    group = config.workers["default"]
    assert (group.queues, group.concurrency) == (("default", "emails"), 2)
