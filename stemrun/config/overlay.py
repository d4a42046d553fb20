"""STEM_* environment variables override stem.yaml (precedence: environment > file > default).

An empty variable counts as unset. A variable replaces the whole key it names: for example
`STEM_SIGNING_KEYS` replaces `signing.keys`, it is not merged with it. Setting any `STEM_SIGNING_*`
variable creates a `signing` section when the file has none; likewise `STEM_TLS_*` and `tls`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stemrun.config.problem import Problem, YamlPath
from stemrun.config.size import parse_size

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class _BadValue(ValueError):
    pass


def _text(raw: str) -> str:
    return raw.strip()


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise _BadValue(f"expected an integer >= {minimum}, got {raw!r}") from None
        if value < minimum:
            raise _BadValue(f"expected an integer >= {minimum}, got {raw!r}")
        return value

    return parse


def _algorithm(raw: str) -> str:
    value = raw.strip()
    if value not in ("hmac-sha256", "ed25519"):
        raise _BadValue(f"must be one of: hmac-sha256, ed25519 (got {raw!r})")
    return value


def _boolean(raw: str) -> bool:
    try:
        return _BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise _BadValue(f"expected true, 1, false or 0, got {raw!r}") from None


def _size(raw: str) -> int | str:
    """A whole number of bytes as an integer; a size with a unit (`8MiB`) as written."""
    text = raw.strip()
    try:
        parse_size(text)
    except ValueError as exc:
        raise _BadValue(str(exc)) from None
    return int(text) if text.isdecimal() else text


def _key_list(raw: str) -> dict[str, str]:
    """`id:base64,id2:base64` -> {id: base64}; the values are secrets, so never echoed."""
    keys: dict[str, str] = {}
    for index, item in enumerate(part.strip() for part in raw.split(",")):
        key_id, sep, secret = item.partition(":")
        if not sep or not key_id.strip() or not secret.strip():
            message = f"item {index + 1} is not of the form id:base64 (write id:base64,id2:base64)"
            raise _BadValue(message)
        keys[key_id.strip()] = secret.strip()
    return keys


VARIABLES: dict[str, tuple[YamlPath, Callable[[str], Any]]] = {
    "STEM_BROKER_URL": (("broker",), _text),
    "STEM_RESULT_BACKEND_URL": (("result_backend",), _text),
    "STEM_SCHEDULE_STORE_URL": (("schedule_store",), _text),
    "STEM_DEFAULT_QUEUE": (("default_queue",), _text),
    "STEM_PREFETCH_MULTIPLIER": (("prefetch_multiplier",), _integer(1)),
    "STEM_DEFAULT_MAX_RETRIES": (("default_max_retries",), _integer(0)),
    "STEM_LIMITS_MAX_PAYLOAD": (("limits", "max_payload"), _size),
    "STEM_SIGNING_ALGORITHM": (("signing", "algorithm"), _algorithm),
    "STEM_SIGNING_KEYS": (("signing", "keys"), _key_list),
    "STEM_SIGNING_ACTIVE_KEY": (("signing", "active_key"), _text),
    "STEM_SIGNING_PUBLIC_KEYS": (("signing", "public_keys"), _key_list),
    "STEM_SIGNING_PRIVATE_KEYS": (("signing", "private_keys"), _key_list),
    "STEM_TLS_CA_CERT": (("tls", "ca_cert"), _text),
    "STEM_TLS_CLIENT_CERT": (("tls", "client_cert"), _text),
    "STEM_TLS_CLIENT_KEY": (("tls", "client_key"), _text),
    "STEM_TLS_ALLOW_INSECURE": (("tls", "allow_insecure"), _boolean),
}


@dataclass(slots=True)
class Overlay:
    """The data with the environment applied, its problems, and which path each variable set."""

    data: Any = None
    problems: list[Problem] = field(default_factory=list)
    sources: dict[YamlPath, str] = field(default_factory=dict)


def apply_overlay(data: Any, env: Mapping[str, str]) -> Overlay:
    """Apply every set STEM_* variable to `data` (a mapping, changed in place)."""
    result = Overlay(data=data)
    if not isinstance(data, dict):
        return result
    for name, (path, parse) in VARIABLES.items():
        raw = env.get(name, "")
        if not raw.strip():
            continue
        try:
            value = parse(raw)
        except _BadValue as exc:
            result.problems.append(Problem(path=path, message=str(exc), env_var=name))
            continue
        section = data
        for part in path[:-1]:
            if not isinstance(section.get(part), dict):
                section[part] = {}
            section = section[part]
        section[path[-1]] = value
        result.sources[path] = name
    return result
