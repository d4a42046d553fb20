"""Real Redis and Postgres for tests: probe, isolate (namespace / schema), clean up.

Locally an absent service skips the test with the reason; under CI=true it fails the run.
Nothing here flushes a shared server or drops a shared database.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import quote, urlsplit

import pytest

REDIS_URL = os.environ.get("STEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("STEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _absent(what: str, url: str, why: object) -> None:
    message = f"{what} at {url} is not available: {why}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: services are required; run scripts/services.sh)")
    pytest.skip(message)


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1.0
        ):
            return True
    except OSError:
        return False


def require_redis() -> str:
    """The test Redis URL, after checking it answers PING."""
    import redis

    if not _answers(REDIS_URL, 6379):
        _absent("Redis", REDIS_URL, "nothing listens")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        _absent("Redis", REDIS_URL, exc)
    return REDIS_URL


def require_postgres() -> str:
    """The test Postgres URL, after checking it accepts a connection."""
    import psycopg

    if not _answers(POSTGRES_URL, 5432):
        _absent("PostgreSQL", POSTGRES_URL, "nothing listens")
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        _absent("PostgreSQL", POSTGRES_URL, exc)
    return POSTGRES_URL


def unique_namespace(prefix: str = "t") -> str:
    """A namespace no other test uses (valid as an SQL identifier and a Redis key prefix)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def delete_redis_namespace(url: str, namespace: str) -> None:
    """Delete the keys of one namespace only (never FLUSHALL)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def create_postgres_schema(url: str, schema: str) -> str:
    """Create `schema` and return a URL whose connections use it as their search_path."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def drop_postgres_schema(url: str, schema: str) -> None:
    """Drop one test schema (never a shared database)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
