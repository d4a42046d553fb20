"""What a user sees for a broken stem.yaml: one `FILE:LINE:COL: yaml.path: message` per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemrun.config import load_config
from stemrun.errors import ConfigError


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problem lines for `text` saved as stem.yaml, loaded the way the CLI names it."""
    (tmp_path / "stem.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "stem.yaml", env=env or {})
    prefix = f"{tmp_path}/"
    return [line.removeprefix(prefix) for line in caught.value.problems]


def test_misspelled_key_points_at_the_key_with_a_suggestion(tmp_path: Path) -> None:
    text = "tasks:\n  email.send:\n    handler: myapp.tasks:send\n    max_retrys: 5\n"
    assert problems(tmp_path, text) == [
        "stem.yaml:4:5: tasks.email.send.max_retrys: unknown key 'max_retrys' "
        "(did you mean 'max_retries'?)"
    ]


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    assert problems(tmp_path, "beat:\n  tick: 1s\n") == [
        "stem.yaml:2:3: beat.tick: unknown key 'tick' (allowed: enabled, tick_interval, lock_ttl)"
    ]


def test_error_names_the_file_as_the_user_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "stem.yaml").write_text("namespce: x\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("app/stem.yaml", env={})
    assert str(caught.value) == (
        "app/stem.yaml:1:1: namespce: unknown key 'namespce' (did you mean 'namespace'?)"
    )


def test_wrong_types_and_ranges_are_all_reported_in_file_order(tmp_path: Path) -> None:
    text = """\
tasks:
  t:
    handler: m:f
    max_retries: five
    priority: 12
    soft_time_limit: 5 minutes
    rate_limit: 10/sec
workers:
  g: {pool: proc, concurrency: 0, queues: []}
metrics: {port: 70000}
logging: {level: verbose}
"""
    assert problems(tmp_path, text) == [
        "stem.yaml:4:18: tasks.t.max_retries: expected an integer, got 'five'",
        "stem.yaml:5:15: tasks.t.priority: must be at most 9, got 12",
        "stem.yaml:6:22: tasks.t.soft_time_limit: expected a duration like '250ms', '10s', '5m',"
        " '2h', '1d' or a number of seconds, got '5 minutes'",
        "stem.yaml:7:17: tasks.t.rate_limit: expected a rate like '10/s', '100/m' or '5/h',"
        " got '10/sec'",
        "stem.yaml:9:13: workers.g.pool: must be one of: process, thread, async (got 'proc')",
        "stem.yaml:9:32: workers.g.concurrency: must be at least 1, got 0",
        "stem.yaml:9:43: workers.g.queues: must not be empty",
        "stem.yaml:10:17: metrics.port: must be at most 65535, got 70000",
        "stem.yaml:11:18: logging.level: must be one of: debug, info, warning, error"
        " (got 'verbose')",
    ]


def test_missing_required_key_points_at_the_entry(tmp_path: Path) -> None:
    assert problems(tmp_path, "tasks:\n  t:\n    queue: default\n") == [
        "stem.yaml:2:3: tasks.t: missing required key 'handler'"
    ]


def test_unquoted_date_suggests_quotes(tmp_path: Path) -> None:
    text = "tasks: {t: {handler: 'a:b'}}\nschedules:\n  s: {task: t, spec: 2030-01-01}\n"
    assert problems(tmp_path, text) == [
        "stem.yaml:3:22: schedules.s.spec: expected a string, got 2030-01-01"
        " (put it in quotes to make it a string)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "stem.yaml:1:1: (top level): expected a mapping, got a list"),
        ("", "stem.yaml:1:1: (top level): expected a mapping, got nothing"),
        ("version: 2\n", "stem.yaml:1:10: version: must be 1, got 2"),
        ("queues: [a]\n", "stem.yaml:1:9: queues: expected a mapping, got a list"),
    ],
)
def test_top_level_shape(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tasks:\n  t:\n    handler: m:f\n   queue: x\n",
            "stem.yaml:4:4: invalid YAML: expected <block end>, but found '<block mapping start>'"
            " (while parsing a block mapping)",
        ),
        (
            "tasks: [a, b\n",
            "stem.yaml:1:8: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence)",
        ),
    ],
)
def test_malformed_yaml_reports_where_the_parser_stopped(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problems(tmp_path, text) == [expected]


def test_duplicate_key_points_at_the_second_one(tmp_path: Path) -> None:
    text = "tasks:\n  t: {handler: 'm:f'}\n  t: {handler: 'm:g'}\n"
    assert problems(tmp_path, text) == [
        "stem.yaml:3:3: tasks.t: duplicate key 't' (first defined on line 2)"
    ]


def test_workflow_shape(tmp_path: Path) -> None:
    text = """\
tasks: {a: {handler: 'm:a'}}
workflows:
  w1: {}
  w2: {chain: [{task: a}], group: [{task: a}]}
  w3: {chain: []}
  w4: {chord: {body: [{task: a}]}}
  w5: {chain: [{task: a, arg: 1}]}
"""
    assert problems(tmp_path, text) == [
        "stem.yaml:3:3: workflows.w1: needs one of: chain, group, chord",
        "stem.yaml:4:3: workflows.w2: must have exactly one of: chain, group, chord"
        " (got 'chain' and 'group')",
        "stem.yaml:5:15: workflows.w3.chain: must not be empty",
        "stem.yaml:6:8: workflows.w4.chord: missing required key 'callback'",
        "stem.yaml:7:26: workflows.w5.chain[0].arg: unknown key 'arg' (did you mean 'args'?)",
    ]


def test_non_finite_numbers_are_rejected(tmp_path: Path) -> None:
    text = "tasks:\n  t: {handler: 'a:b', expires: .inf}\n"
    assert problems(tmp_path, text) == [
        "stem.yaml:2:32: tasks.t.expires: must be a finite number, got inf"
    ]
