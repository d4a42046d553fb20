"""The pure flow-control parts: rates, key templates, carried slots; unique enqueue on memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.memory import MemoryBroker
from stemrun.client import EnqueueOptions, Stem
from stemrun.clock import ManualClock
from stemrun.config import config_from_mapping
from stemrun.envelope import Envelope, decode, encode, with_delivery
from stemrun.errors import BrokerError, ConfigError, UsageError
from stemrun.flow import carried_slot, parse_rate, render_key, template_fields, with_slot
from stemrun.state import TaskState


@pytest.mark.parametrize(
    ("text", "interval"), [("10/s", 0.1), ("5/s", 0.2), ("30/m", 2.0), ("2/h", 1800.0)]
)
def test_parse_rate_gives_the_spacing(text: str, interval: float) -> None:
    assert parse_rate(text).interval_s == pytest.approx(interval)


@pytest.mark.parametrize("text", ["0/s", "10/d", "ten/s", "10", "-1/s", "1.5/s"])
def test_parse_rate_refuses_anything_else(text: str) -> None:
    with pytest.raises(UsageError, match="rate"):
        parse_rate(text)


def test_render_key_reads_task_args_and_headers() -> None:
    key = render_key(
        "{task}/{args.user.id}/{headers.tenant}/{args.n}/{{x}}",
        task="email.send",
        args={"user": {"id": "u7"}, "n": 3},
        headers={"tenant": "billing"},
    )
    assert key == "email.send/u7/billing/3/{x}"


def test_render_key_names_the_missing_arg() -> None:
    with pytest.raises(UsageError, match=r"needs args\.user_id, which this call does not pass"):
        render_key("{args.user_id}", task="t", args={"other": 1}, headers={})


def test_a_lenient_render_leaves_a_missing_header_empty() -> None:
    assert render_key("t-{headers.tenant}", task="t", args={}, headers={}, strict=False) == "t-"


@pytest.mark.parametrize("template", ["{user_id}", "{args}", "{args[0]}", "{args.x!r}", "{", "{}"])
def test_template_fields_refuses_what_is_not_a_field(template: str) -> None:
    with pytest.raises(UsageError, match="key template"):
        template_fields(template)


def test_a_carried_slot_counts_only_for_the_delivery_it_was_reserved_for() -> None:
    raw = encode(Envelope(id="a", task="t", queue="q"))
    delayed = with_slot(raw, attempt=0, eta=100.0, slot=100.5)
    assert carried_slot(delayed, decode(delayed)) == 100.5
    # A retry of that delivery keeps the unknown field but changes attempt and eta.
    retried = with_delivery(delayed, attempt=1, eta=200.0)
    assert carried_slot(retried, decode(retried)) is None
    assert carried_slot(raw, decode(raw)) is None


def test_a_bad_rate_or_template_in_stem_yaml_is_a_config_error(tmp_path: Path) -> None:
    tasks = {
        "a": {"handler": "x:a", "rate_limit": "0/s"},
        "b": {"handler": "x:b", "rate_limit": {"rate": "1/s", "key": "{tenant}"}},
        "c": {"handler": "x:c", "unique": {"key": "{args.x:>3}"}},
    }
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"broker": "memory://", "tasks": tasks}, root_dir=tmp_path)
    text = str(caught.value)
    assert "tasks.a.rate_limit: rate '0/s' must allow at least one start" in text
    assert "tasks.b.rate_limit.key: key template '{tenant}'" in text
    assert "tasks.c.unique.key" in text


def test_keyed_rate_limits_build_into_the_config(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "broker": "memory://",
            "queues": {"default": {"rate_limit": {"rate": "100/m", "key": "{headers.tenant}"}}},
            "tasks": {"a": {"handler": "x:a", "rate_limit": "5/s"}},
        },
        root_dir=tmp_path,
    )
    queue, task = config.queues["default"], config.tasks["a"]
    assert (queue.rate_limit, queue.rate_limit_key) == ("100/m", "{headers.tenant}")
    assert (task.rate_limit, task.rate_limit_key) == ("5/s", None)


# -- unique enqueue through the client -----------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stem(tmp_path: Path, clock: ManualClock) -> Iterator[Stem]:
    config = config_from_mapping(
        {
            "broker": "memory://",
            "tasks": {
                "report": {"handler": "x:r", "unique": {"key": "{args.user_id}", "ttl": "10m"}},
                "plain": {"handler": "x:p"},
            },
        },
        root_dir=tmp_path,
    )
    broker, backend = MemoryBroker(clock=clock), MemoryBackend(clock=clock)
    with Stem(config, broker=broker, backend=backend, clock=clock) as client:
        yield client


def published(stem: Stem) -> list[str]:
    return [d.id for d in stem.broker.fetch(["default"], 100, consumer="t", lease_s=30)]


def test_a_duplicate_returns_the_first_id_and_publishes_nothing(stem: Stem) -> None:
    first = stem.enqueue("report", {"user_id": 7})
    assert stem.enqueue("report", {"user_id": 7, "extra": True}) == first
    other = stem.enqueue("report", {"user_id": 8})
    assert other != first
    assert sorted(published(stem)) == sorted([first, other])


def test_enqueue_many_dedupes_within_the_batch_and_against_the_store(stem: Stem) -> None:
    before = stem.enqueue("report", {"user_id": 1})
    ids = stem.enqueue_many(
        [("report", {"user_id": 1}), ("report", {"user_id": 2}), ("report", {"user_id": 2})]
    )
    assert ids[0] == before and ids[1] == ids[2] != before
    assert sorted(published(stem)) == sorted([before, ids[1]])


def test_the_key_is_free_again_once_the_holder_finished(stem: Stem) -> None:
    first = stem.enqueue("report", {"user_id": 7})
    record = stem.status(first)
    # The holder is terminal but its key was never released (its worker died in between).
    stem.backend.replace(record.__class__(**{**record.to_dict(), "state": TaskState.SUCCEEDED}))
    assert stem.enqueue("report", {"user_id": 7}) != first


def test_a_ttl_lapse_frees_the_key(stem: Stem, clock: ManualClock) -> None:
    first = stem.enqueue("report", {"user_id": 7})
    clock.advance(601)
    assert stem.enqueue("report", {"user_id": 7}) != first


def test_a_template_naming_a_missing_arg_is_a_usage_error(stem: Stem) -> None:
    with pytest.raises(UsageError, match=r"needs args\.user_id"):
        stem.enqueue_many([("plain", {}), ("report", {"name": "x"})])
    assert published(stem) == []


def test_a_failed_publish_releases_the_claim(stem: Stem, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(messages: object) -> None:
        raise BrokerError("broker down")

    monkeypatch.setattr(stem.broker, "publish", refuse)
    with pytest.raises(BrokerError):
        stem.enqueue("report", {"user_id": 7}, task_id="first")
    monkeypatch.undo()
    assert stem.enqueue("report", {"user_id": 7}, task_id="second") == "second"


def test_re_enqueueing_the_same_id_keeps_its_claim(stem: Stem) -> None:
    options = EnqueueOptions(task_id="fixed")
    assert stem.enqueue_many([("report", {"user_id": 7}, options)]) == ["fixed"]
    assert stem.enqueue_many([("report", {"user_id": 7}, options)]) == ["fixed"]
    assert stem.enqueue("report", {"user_id": 7}) == "fixed"
    assert published(stem) == ["fixed"]
