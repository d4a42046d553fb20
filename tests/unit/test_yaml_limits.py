"""Hostile stem.yaml files are refused with a located error, before any value is built.

Deep nesting, alias bombs (directly, through merge keys, or nesting through aliases), aliases
inside what they name, and every explicit tag, wherever it stands: each is one
`stem.yaml:LINE:COL: message` ConfigError, never a traceback or a runaway allocation.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stemrun.config import load_config
from stemrun.config.yaml_limits import MAX_DEPTH, MAX_NODES
from stemrun.errors import ConfigError


def refusal(tmp_path: Path, text: str) -> str:
    """The one problem line for `text` saved as stem.yaml (file name relative to tmp_path)."""
    (tmp_path / "stem.yaml").write_text(text, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "stem.yaml", env={})
    assert time.monotonic() - started < 5, "refusing took as long as parsing it all"
    (line,) = caught.value.problems
    return line.removeprefix(f"{tmp_path}/")


def flow_nesting(levels: int) -> str:
    """`version: 1` and an `x:` value that is `levels` sequences inside one another."""
    return "version: 1\nx: " + "[" * levels + "]" * levels + "\n"


BILLION_LAUGHS = """\
version: 1
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("levels", [MAX_DEPTH, 5_000, 50_000])
def test_deep_nesting_is_refused_where_it_goes_too_deep(tmp_path: Path, levels: int) -> None:
    # The top-level mapping is the first level, so `x:` may open MAX_DEPTH - 1 sequences.
    column = len("x: ") + MAX_DEPTH
    assert refusal(tmp_path, flow_nesting(levels)) == (
        f"stem.yaml:2:{column}: nested more than {MAX_DEPTH} levels deep; stem.yaml allows at "
        f'most {MAX_DEPTH} (docs/security.md, "Hostile configuration files")'
    )


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    (tmp_path / "stem.yaml").write_text(flow_nesting(MAX_DEPTH - 1))
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "stem.yaml", env={})
    assert "unknown key 'x'" in str(caught.value), "the file was read, then its keys checked"


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    text = "version: 1\n" + "".join(f"{' ' * i}k{i}:\n" for i in range(200))
    assert refusal(tmp_path, text).startswith(
        f"stem.yaml:{MAX_DEPTH + 2}:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"
    )


def test_a_billion_laughs_is_refused_at_the_alias_that_overflows(tmp_path: Path) -> None:
    assert refusal(tmp_path, BILLION_LAUGHS) == (
        f"stem.yaml:7:8: the file holds more than {MAX_NODES:,} values once alias *e is "
        'expanded; refused as a possible alias bomb (docs/security.md, "Hostile configuration '
        'files")'
    )


def test_a_bomb_through_merge_keys_is_refused(tmp_path: Path) -> None:
    lines = ["version: 1", "m0: &m0 {k: v}"]
    for n in range(1, 9):
        lines.append(f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 9)}], k{n}: v}}")
    assert "possible alias bomb" in refusal(tmp_path, "\n".join(lines) + "\n")


def test_a_long_chain_of_merges_is_refused_before_it_recurses(tmp_path: Path) -> None:
    # Each mapping merges the previous one: merging them all would recurse 5,000 deep.
    lines = ["version: 1", "m0: &m0 {k: v}"]
    lines += [f"m{n}: &m{n} {{<<: *m{n - 1}, k{n}: v}}" for n in range(1, 5_000)]
    assert refusal(tmp_path, "\n".join(lines) + "\n").startswith(
        f"stem.yaml:{MAX_DEPTH + 1}:16: nested more than {MAX_DEPTH} levels deep once alias "
        f"*m{MAX_DEPTH - 2} is expanded"
    )


def test_nesting_through_aliases_counts_the_expanded_depth(tmp_path: Path) -> None:
    # Each anchor is 40 levels deep, and each one nests the previous: 1 KB, thousands of levels.
    lines = ["version: 1", "a0: &a0 " + "[" * 40 + "]" * 40]
    lines += [f"a{n}: &a{n} " + "[" * 40 + f"*a{n - 1}" + "]" * 40 for n in range(1, 30)]
    line = refusal(tmp_path, "\n".join(lines) + "\n")
    assert line.startswith("stem.yaml:3:49: nested more than 64 levels deep once alias *a0 is ")


def test_an_alias_inside_what_it_names_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path, "version: 1\nloop: &loop [1, *loop]\n") == (
        "stem.yaml:2:17: alias *loop is inside the collection it refers to"
    )


@pytest.mark.parametrize(
    ("value", "tag", "column"),
    [
        ("!!python/object/apply:os.system [echo owned]", "!!python/object/apply:os.system", 15),
        ("!!python/object/apply:os.system {args: [echo]}", "!!python/object/apply:os.system", 15),
        ("!!python/name:os.system", "!!python/name:os.system", 15),
        ("!!set {ValueError}", "!!set", 15),
        ("!!str ValueError", "!!str", 15),
        ("!local [ValueError]", "!local", 15),
        ("!<tag:example.com,2026:x> [ValueError]", "tag:example.com,2026:x", 15),
        ("[ValueError, !!binary aGk=]", "!!binary", 28),
    ],
)
def test_every_explicit_tag_is_refused_wherever_it_stands(
    tmp_path: Path, value: str, tag: str, column: int
) -> None:
    text = f"version: 1\ntasks:\n  t:\n    handler: m:f\n    retry_on: {value}\n"
    assert refusal(tmp_path, text) == (
        f"stem.yaml:5:{column}: YAML tag '{tag}' is not allowed: stem.yaml takes plain values "
        "only (remove the tag; quote the value to make it a string)"
    )


def test_a_tag_on_a_key_is_refused(tmp_path: Path) -> None:
    text = "version: 1\nqueues:\n  !!python/object:os.system x: {}\n"
    assert refusal(tmp_path, text).startswith(
        "stem.yaml:3:3: YAML tag '!!python/object:os.system' is not allowed"
    )


def test_a_value_that_looks_like_a_date_but_is_none_is_located(tmp_path: Path) -> None:
    assert refusal(tmp_path, "version: 1\nnamespace: 2024-13-45\n") == (
        "stem.yaml:2:12: cannot read this value as a timestamp: month must be in 1..12 "
        "(quote it to make it a string)"
    )


def test_a_large_honest_file_with_anchors_still_loads(tmp_path: Path) -> None:
    backoff = "{initial: 1s, max: 1m, factor: 2, jitter: true}"
    lines = ["version: 1", "tasks:", f"  t0: {{handler: 'm:f', retry_backoff: &retry {backoff}}}"]
    lines += [
        f"  t{n}: {{handler: 'm:f', retry_backoff: *retry, retry_on: [ValueError]}}"
        for n in range(1, 1_000)
    ]
    (tmp_path / "stem.yaml").write_text("\n".join(lines) + "\n")
    config = load_config(tmp_path / "stem.yaml", env={})
    assert len(config.tasks) == 1_000
    assert config.tasks["t999"].retry_backoff.max_s == 60


def test_a_file_with_too_many_values_is_refused_without_aliases(tmp_path: Path) -> None:
    text = "version: 1\nx: [" + ", ".join(["1"] * MAX_NODES) + "]\n"
    # Five values come before the items (the top mapping, version, 1, x, the list): the item
    # that overflows is number MAX_NODES - 5, counted from 0, each item taking 3 columns.
    column = len("x: [") + 3 * (MAX_NODES - 5) + 1
    assert refusal(tmp_path, text).startswith(
        f"stem.yaml:2:{column}: the file holds more than "
        f"{MAX_NODES:,} values; stem.yaml allows at most {MAX_NODES:,}"
    )
