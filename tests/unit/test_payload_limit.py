"""`limits.max_payload`: its size grammar, the config, the enqueue check, the worker's refusal."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stemrun import PayloadTooLarge
from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import Delivery
from stemrun.brokers.memory import MemoryBroker
from stemrun.cli.produce import parse_args
from stemrun.client import EnqueueOptions, Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping, load_schema
from stemrun.config.model import Config
from stemrun.config.size import SIZE_PATTERN, format_size, parse_size
from stemrun.enqueue import DELIVERY_ALLOWANCE
from stemrun.errors import ConfigError, UsageError
from stemrun.flow import with_slot
from stemrun.state import DeadLetterReason, TaskState
from stemrun.worker.admit import Admitted, admit
from stemrun.worker.settle import Settlement

MIB = 1024 * 1024


def big(size: int) -> dict[str, str]:
    return {"blob": "x" * size}


# -- the size grammar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "size"),
    [
        (1, 1),
        (1048576, MIB),
        ("1048576", MIB),  # from an environment variable
        ("1B", 1),
        ("512KiB", 512 * 1024),
        ("1MiB", MIB),
        ("2GiB", 2 * 1024**3),
        ("2KB", 2000),
        ("2MB", 2_000_000),
        ("1GB", 10**9),
    ],
)
def test_sizes_are_bytes_or_a_whole_number_with_a_binary_or_decimal_unit(
    written: str | int, size: int
) -> None:
    assert parse_size(written) == size


@pytest.mark.parametrize(
    "written", [0, -1, True, 1.5, "", "0B", "01MiB", "1.5MiB", "1 MiB", "1mb", "1mib", "1M", "MiB"]
)
def test_other_spellings_are_refused_rather_than_guessed(written: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(written)


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (800, "800 B"),
        (1500, "1.5 KiB"),
        (MIB, "1 MiB"),
        (2_000_000, "2 MB"),
        (2 * MIB + 300, "2.0 MiB"),
        (3 * 1024**3, "3 GiB"),
    ],
)
def test_sizes_are_shown_exactly_when_a_unit_divides_them(size: int, shown: str) -> None:
    assert format_size(size) == shown


def test_the_schema_accepts_exactly_the_grammar_of_parse_size() -> None:
    assert load_schema()["$defs"]["size"]["pattern"] == SIZE_PATTERN


# -- the configuration --------------------------------------------------------------------


def config(tmp_path: Path, **extra: Any) -> Config:
    data = {
        "broker": "memory://",
        "tasks": {"small": {"handler": "x:small"}, "bulk": {"handler": "x:bulk"}},
        **extra,
    }
    return config_from_mapping(data, root_dir=tmp_path, env={})


def test_every_task_defaults_to_one_mebibyte(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    assert loaded.limits.max_payload == MIB
    assert {t.max_payload for t in loaded.tasks.values()} == {MIB}


def test_a_task_limit_overrides_the_top_level_one(tmp_path: Path) -> None:
    tasks = {
        "small": {"handler": "x:small"},
        "bulk": {"handler": "x:bulk", "limits": {"max_payload": "8MiB"}},
    }
    loaded = config(tmp_path, tasks=tasks, limits={"max_payload": "512KiB"})
    assert loaded.tasks["small"].max_payload == 512 * 1024
    assert loaded.tasks["bulk"].max_payload == 8 * MIB
    assert loaded.largest_max_payload() == 8 * MIB


def test_a_misspelt_size_is_a_located_error_with_the_grammar(tmp_path: Path) -> None:
    (tmp_path / "stem.yaml").write_text("version: 1\nlimits:\n  max_payload: 1mb\n")
    from stemrun.config import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "stem.yaml", env={})
    assert caught.value.problems == [
        f"{tmp_path}/stem.yaml:3:16: limits.max_payload: expected a size like '512KiB', "
        "'1MiB', '2MB' or a whole number of bytes, got '1mb'"
    ]


def test_the_environment_sets_the_top_level_limit_and_task_limits_still_win(
    tmp_path: Path,
) -> None:
    tasks = {
        "small": {"handler": "x:small"},
        "bulk": {"handler": "x:bulk", "limits": {"max_payload": 3000}},
    }
    data = {"broker": "memory://", "tasks": tasks}
    env = {"STEM_LIMITS_MAX_PAYLOAD": "2MiB"}
    loaded = config_from_mapping(data, root_dir=tmp_path, env=env)
    assert loaded.limits.max_payload == 2 * MIB
    assert loaded.tasks["small"].max_payload == 2 * MIB
    assert loaded.tasks["bulk"].max_payload == 3000
    bytes_env = {"STEM_LIMITS_MAX_PAYLOAD": "4096"}
    assert config_from_mapping(data, root_dir=tmp_path, env=bytes_env).limits.max_payload == 4096
    with pytest.raises(ConfigError, match=r"env STEM_LIMITS_MAX_PAYLOAD: limits\.max_payload"):
        config_from_mapping(data, root_dir=tmp_path, env={"STEM_LIMITS_MAX_PAYLOAD": "2 megs"})


def test_schedule_and_workflow_args_over_the_limit_are_refused_when_the_file_loads(
    tmp_path: Path,
) -> None:
    schedules = {"nightly": {"task": "small", "spec": "every:1h", "args": big(MIB)}}
    workflows = {"flow": {"chain": [{"task": "bulk"}, {"task": "small", "args": big(MIB)}]}}
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, schedules=schedules, workflows=workflows)
    lines = caught.value.problems
    assert len(lines) == 2
    assert lines[0].startswith("<config>: schedules.nightly.args: args make a message of 1.0 MiB")
    assert lines[1].startswith("<config>: workflows.flow.chain[1].args: args make a message of")
    assert all("for task 'small', over its limit of 1 MiB (limits.max_payload)" in x for x in lines)
    tasks = {"small": {"handler": "x:small", "limits": {"max_payload": "2MiB"}}}
    assert config_from_mapping(
        {"broker": "memory://", "tasks": tasks, "schedules": schedules},
        root_dir=tmp_path,
        env={},
    ).schedules["nightly"].args == big(MIB)


# -- enqueue ------------------------------------------------------------------------------


@pytest.fixture
def stem(tmp_path: Path) -> Iterator[Stem]:
    tasks = {
        "small": {"handler": "x:small"},
        "bulk": {"handler": "x:bulk", "limits": {"max_payload": "4MiB"}},
    }
    loaded = config(tmp_path, tasks=tasks)
    clock = ManualClock()
    with Stem(
        loaded, broker=MemoryBroker(clock=clock), backend=MemoryBackend(clock=clock), clock=clock
    ) as client:
        yield client


def queued(stem: Stem) -> list[bytes]:
    return [d.body for d in stem.broker.fetch(["default"], 100, consumer="t", lease_s=30)]


def test_args_over_the_limit_are_refused_naming_task_size_and_limit(stem: Stem) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        stem.enqueue("small", big(2 * MIB), task_id="too-big")
    error = caught.value
    assert isinstance(error, UsageError)
    assert (error.task, error.limit) == ("small", MIB)
    assert 2 * MIB < error.size < 2 * MIB + 1024
    assert str(error).startswith(
        f"task 'small': its message encodes to 2.0 MiB ({error.size} bytes), over its limit of "
        "1 MiB (limits.max_payload)"
    )
    assert stem.status("too-big").state is TaskState.UNKNOWN
    assert queued(stem) == []


def test_a_task_with_a_larger_limit_takes_the_same_args(stem: Stem) -> None:
    task_id = stem.enqueue("bulk", big(2 * MIB))
    assert stem.status(task_id).state is TaskState.QUEUED
    assert len(queued(stem)) == 1


def test_one_oversized_item_stores_nothing_of_its_batch(stem: Stem) -> None:
    items = [
        ("small", {"n": 1}, EnqueueOptions(task_id="first")),
        ("small", big(2 * MIB), EnqueueOptions(task_id="second")),
    ]
    with pytest.raises(PayloadTooLarge):
        stem.enqueue_many(items)
    assert {stem.status(i).state for i in ("first", "second")} == {TaskState.UNKNOWN}
    assert queued(stem) == []


def test_a_canvas_with_an_oversized_step_stores_nothing(stem: Stem) -> None:
    # Each step's args fit, but the first step's message carries the steps that follow it.
    steps = [("small", {"n": 1}), ("bulk", big(700 * 1024)), ("bulk", big(700 * 1024))]
    with pytest.raises(PayloadTooLarge, match="task 'small'"):
        stem.canvas.chain(steps, canvas_id="c1")
    assert stem.status("c1").state is TaskState.UNKNOWN
    assert stem.status("c1.0").state is TaskState.UNKNOWN
    assert queued(stem) == []


# -- the worker ---------------------------------------------------------------------------


def delivery(body: bytes) -> Delivery:
    return Delivery(id="m1", queue="default", body=body, priority=0, receipt="r", deliveries=1)


def test_a_worker_dead_letters_a_message_over_every_limit_without_parsing_it(
    tmp_path: Path,
) -> None:
    loaded = config(tmp_path)
    # Not even JSON: a decode-error here would prove the worker parsed it first.
    body = b"{" * (MIB + DELIVERY_ALLOWANCE + 1)
    result = admit(delivery(body), loaded, 100.0, verifier=None)
    assert isinstance(result, Settlement)
    assert result.dead is not None and result.dead.reason == DeadLetterReason.TOO_LARGE
    assert result.dead.error["type"] == "PayloadTooLarge"
    assert "larger than the largest limits.max_payload of any task (1 MiB)" in str(
        result.dead.error["message"]
    )
    assert result.transition is None, "nothing vouches for the id of an undecoded message"


def test_a_message_at_the_limit_is_admitted_after_retries_and_rate_slots_grew_it(
    stem: Stem,
) -> None:
    stem.enqueue("small", big(0))
    [empty] = queued(stem)
    task_id = stem.enqueue("small", big(MIB - len(empty)))  # an `x` adds one byte to the message
    [body] = queued(stem)
    assert len(body) == MIB
    with pytest.raises(PayloadTooLarge):
        stem.enqueue("small", big(MIB - len(empty) + 1))
    grown = with_slot(body, attempt=1_000, eta=9_999_999_999.123456, slot=9_999_999_999.654321)
    assert len(grown) > MIB
    result = admit(
        Delivery(id=task_id, queue="default", body=grown, priority=0, receipt="r", deliveries=1),
        stem.config,
        100.0,
        verifier=None,
    )
    assert isinstance(result, Admitted)


# -- the command line's --args ------------------------------------------------------------


def test_args_come_inline_from_a_file_or_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_args('{"n": 1}', ["m=2"]) == {"n": 1, "m": 2}
    (tmp_path / "args.json").write_text('{"n": 3, "text": "é"}', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert parse_args("@args.json", []) == {"n": 3, "text": "é"}

    class Stdin:
        buffer = io.BytesIO(b'{"n": 4}')

    monkeypatch.setattr("sys.stdin", Stdin)
    assert parse_args("-", []) == {"n": 4}


def test_an_unreadable_or_malformed_args_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(UsageError) as caught:
        parse_args(f"@{missing}", [])
    assert str(caught.value).startswith(f"--args @{missing}: cannot read '{missing}': No such")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError) as caught:
        parse_args(f"@{tmp_path}/bad.json", [])
    assert str(caught.value).startswith(f"--args @{tmp_path}/bad.json is not valid JSON")
