"""One configuration problem, and how it is written for a human."""

from __future__ import annotations

from dataclasses import dataclass

PathPart = str | int
YamlPath = tuple[PathPart, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """What is wrong at `path`; `at_key` points at the key rather than its value."""

    path: YamlPath
    message: str
    at_key: bool = False
    env_var: str | None = None  # set when the value came from a STEM_* variable
    mark: tuple[int, int] | None = None  # explicit 1-based line, column (else found by path)


def format_path(path: YamlPath) -> str:
    """`tasks.email.send.max_retries`, with list items as `chain[1]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"
