"""The store registry: every row is complete and consistent, and errors name URL and role."""

from __future__ import annotations

import json

import pytest

from stemrun.backends.base import FlowControl, RecordListing, ResultBackend, Telemetry
from stemrun.backends.memory import MemoryBackend
from stemrun.config.schema import SCHEMA_PATH
from stemrun.errors import BackendError, BrokerError, ScheduleStoreError
from stemrun.store_base import InProcessStore, require
from stemrun.stores import (
    ROLES,
    SCHEMES,
    STORES,
    expected_schemes,
    open_backend,
    open_broker,
    open_schedule_store,
    process_local,
    store_class,
)


@pytest.mark.parametrize("kind", STORES, ids=lambda kind: kind.name)
def test_every_row_names_classes_that_implement_their_contract(kind: object) -> None:
    for scheme in kind.schemes:  # type: ignore[attr-defined]
        for role, contract in ROLES.items():
            cls = store_class(role, f"{scheme}://somewhere")
            assert issubclass(cls, contract)
            assert not getattr(cls, "__abstractmethods__", None), f"{cls.__name__} is abstract"


def test_the_schema_names_every_registered_scheme() -> None:
    description = json.loads(SCHEMA_PATH.read_text())["properties"]["broker"]["description"]
    assert [s for s in SCHEMES if f"`{s}://" not in description] == []


@pytest.mark.parametrize(
    ("opener", "error", "role"),
    [
        (open_broker, BrokerError, "broker"),
        (open_backend, BackendError, "result backend"),
        (open_schedule_store, ScheduleStoreError, "schedule store"),
    ],
)
def test_an_unknown_scheme_names_role_masked_url_and_the_choices(
    opener: object, error: type[Exception], role: str
) -> None:
    with pytest.raises(error) as caught:
        opener("nats://user:secret@host:4222")  # type: ignore[operator]
    message = str(caught.value)
    assert message.startswith(f"{role} nats://user:***@host:4222: unknown URL scheme 'nats'")
    assert expected_schemes() in message and "secret" not in message


def test_memory_is_the_only_store_confined_to_one_process() -> None:
    assert process_local("memory://")
    assert not any(process_local(f"{s}://x") for s in SCHEMES if s != "memory")


def test_in_process_stores_are_shared_by_url_and_namespace() -> None:
    try:
        first = open_backend("memory://", namespace="a")
        assert open_backend("memory://", namespace="a") is first
        assert open_backend("memory://", namespace="b") is not first
    finally:
        InProcessStore.reset_all()


def test_require_returns_the_capability_or_names_store_and_capability() -> None:
    backend = MemoryBackend()
    assert require(backend, Telemetry) is backend

    class Bare(ResultBackend):  # records only: no listing, no flow control
        pass

    Bare.__abstractmethods__ = frozenset()  # no method is called: only the message matters
    with pytest.raises(BackendError, match=r"result backend memory:// cannot list status records"):
        require(Bare("memory://"), RecordListing)
    with pytest.raises(BackendError, match="FlowControl capability"):
        require(Bare("memory://"), FlowControl)
