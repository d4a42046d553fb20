"""Fixtures shared by every test folder: isolated Redis namespaces and Postgres schemas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services


@pytest.fixture
def redis_url() -> str:
    """The test Redis (skips locally / fails under CI when absent)."""
    return services.require_redis()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A fresh namespace on the test Redis, deleted afterwards."""
    namespace = services.unique_namespace()
    yield namespace
    services.delete_redis_namespace(redis_url, namespace)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL on the test Postgres whose search_path is a fresh schema, dropped afterwards."""
    base = services.require_postgres()
    schema = services.unique_namespace("s")
    yield services.create_postgres_schema(base, schema)
    services.drop_postgres_schema(base, schema)
