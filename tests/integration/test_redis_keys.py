"""All Redis key names live in stemrun/redis_keys.py; each Lua file's header lists the same."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from stemrun import redis_keys

_TEMPLATE = re.compile(r"^--\s+(\{ns\}:\S+)", re.MULTILINE)


@pytest.mark.parametrize(
    ("package", "filename", "templates"),
    [
        ("stemrun.brokers", "redis_streams.lua", redis_keys.BROKER_KEYS),
        ("stemrun.backends", "redis.lua", redis_keys.BACKEND_KEYS),
        ("stemrun.schedules", "redis.lua", redis_keys.SCHEDULE_KEYS),
    ],
)
def test_lua_header_mirrors_redis_keys(
    package: str, filename: str, templates: dict[str, str]
) -> None:
    text = resources.files(package).joinpath(filename).read_text()
    header = text.split("\n\n-- script:", 1)[0]
    assert sorted(_TEMPLATE.findall(header)) == sorted(templates)


def test_functions_follow_the_templates() -> None:
    built = {
        redis_keys.stream("ns", "q", 3): "{ns}:stream:{queue}:{priority}",
        redis_keys.leases("ns", "q"): "{ns}:leases:{queue}",
        redis_keys.delayed("ns", "q"): "{ns}:delayed:{queue}",
        redis_keys.wake("ns", "q"): "{ns}:wake:{queue}",
        redis_keys.sequence("ns"): "{ns}:sequence",
        redis_keys.dead_letter("ns", "i"): "{ns}:dead_letter:{id}",
        redis_keys.dead_letters("ns"): "{ns}:dead_letters",
        redis_keys.dead_letters("ns", "q"): "{ns}:dead_letters:{queue}",
        redis_keys.status("ns", "i"): "{ns}:status:{id}",
        redis_keys.workers("ns"): "{ns}:workers",
        redis_keys.worker_deadlines("ns"): "{ns}:worker_deadlines",
        redis_keys.chord("ns", "i"): "{ns}:chord:{id}",
        redis_keys.counters("ns"): "{ns}:counters",
        redis_keys.rate_limiter("ns", "k"): "{ns}:rate:{key}",
        redis_keys.unique("ns", "k"): "{ns}:unique:{key}",
        redis_keys.paused("ns"): "{ns}:paused",
        redis_keys.outbox("ns"): "{ns}:outbox",
        redis_keys.outbox_since("ns"): "{ns}:outbox_since",
    }
    values = {"ns": "ns", "queue": "q", "priority": 3, "id": "i", "key": "k"}
    for key, template in built.items():
        assert key == template.format(**values)
    assert set(built.values()) == set(redis_keys.BROKER_KEYS) | set(redis_keys.BACKEND_KEYS)
