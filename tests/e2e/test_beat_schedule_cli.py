"""`stemrun schedule ...` as a user runs it: apply diffs, confirmation, prune, bad input."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest

from stemrun.stores import open_schedule_store
from tests.e2e.conftest import STEM_YAML, Project, wait_until

SCHEDULES = """
schedules:
  digest:
    task: record
    spec: "cron:0 8 * * *"
    timezone: Europe/Paris
    args: {n: 1}
  pulse:
    task: record
    spec: "every:30s"
    args: {n: 2}
"""


def configure(project: Project, schedules: str, path: str = "stem.yaml") -> None:
    (project.root / path).write_text(textwrap.dedent(STEM_YAML) + textwrap.dedent(schedules))


def stored(project: Project) -> dict[str, dict[str, Any]]:
    store = open_schedule_store("sqlite:///.stem/stem.db", base_dir=project.root)
    try:
        return {entry.name: entry.to_dict() for entry in store.entries()}
    finally:
        store.close()


@pytest.fixture
def applied(project: Project) -> Project:
    configure(project, SCHEDULES)
    done = project.run("schedule", "apply", "--yes")
    assert done.returncode == 0, done.stderr
    return project


def test_apply_prints_the_diff_and_a_second_apply_changes_nothing(project: Project) -> None:
    configure(project, SCHEDULES)
    first = project.run("schedule", "apply", "--yes")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("+ digest: record cron:0 8 * * * (Europe/Paris); next ")
    assert lines[0].endswith(("T08:00:00+01:00", "T08:00:00+02:00"))
    assert lines[1].startswith("+ pulse: record every:30s (UTC); next ")
    assert "2 added, 0 changed, 0 removed" in first.stderr
    second = project.run("schedule", "apply", "--yes")
    assert second.returncode == 0 and second.stdout == ""
    assert "no changes" in second.stderr


def test_editing_one_schedule_reports_exactly_that_change(applied: Project) -> None:
    configure(applied, SCHEDULES.replace("every:30s", "every:1m"))
    done = applied.run("schedule", "apply", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    diff = applied.run_json("schedule", "apply", "--dry-run", "--json")
    assert diff["changed"] == [] and diff["added"] == []  # already applied
    configure(applied, SCHEDULES.replace("every:30s", "every:2m"))
    text = applied.run("schedule", "apply", "--dry-run")
    assert len(text.stdout.splitlines()) == 1
    assert text.stdout.startswith("~ pulse: spec: 'every:1m' -> 'every:2m'; next ")
    assert "0 would be added, 1 would be changed, 0 would be removed" in text.stderr
    assert stored(applied)["pulse"]["spec"] == "every:1m"  # --dry-run wrote nothing


def test_apply_off_a_terminal_needs_yes_and_changes_nothing(project: Project) -> None:
    configure(project, SCHEDULES)
    done = project.run("schedule", "apply")
    assert done.returncode == 2
    assert "+ digest" in done.stdout  # the diff is shown first
    assert "Refusing without --yes" in done.stderr
    assert stored(project) == {}


def test_prune_removes_entries_no_longer_declared(applied: Project) -> None:
    configure(applied, SCHEDULES.split("  pulse:")[0])
    kept = applied.run("schedule", "apply", "--yes")
    assert "1 not declared, kept (use --prune to remove): pulse" in kept.stderr
    assert set(stored(applied)) == {"digest", "pulse"}
    pruned = applied.run("schedule", "apply", "--prune", "--yes")
    assert pruned.returncode == 0 and pruned.stdout.startswith("- pulse: every:30s")
    assert set(stored(applied)) == {"digest"}


def test_apply_from_another_file(applied: Project) -> None:
    configure(applied, "schedules:\n  extra: {task: record, spec: 'every:1h'}\n", "other.yaml")
    done = applied.run("schedule", "apply", "--file", "other.yaml", "--yes")
    assert done.returncode == 0, done.stderr
    assert "+ extra: record every:1h" in done.stdout
    assert set(stored(applied)) == {"digest", "pulse", "extra"}


BAD_INPUTS = [
    (
        "digest: {task: record, spec: 'cron:0 25 * * *'}",
        "schedules.digest.spec: invalid cron expression '0 25 * * *'",
    ),
    (
        "digest: {task: record, spec: 'cron:0 8 * * *', timezone: Europe/Pariss}",
        "schedules.digest.timezone: unknown time zone 'Europe/Pariss'",
    ),
    (
        "digest: {task: recrod, spec: 'cron:0 8 * * *'}",
        "schedules.digest.task: task 'recrod' is not declared under tasks (did you mean 'record'?)",
    ),
    (
        "digest: {task: record, spec: 'every:10s', jitter: 10s}",
        "schedules.digest.jitter: jitter (10s) must be shorter than the interval of 'every:10s'",
    ),
    (
        "digest: {task: record, spec: 'at:next tuesday'}",
        "schedules.digest.spec: at: 'next tuesday' is not an ISO-8601 datetime",
    ),
    (
        "digest: {task: record, spec: 'every:fortnight'}",
        "schedules.digest.spec: invalid every: interval",
    ),
]


@pytest.mark.parametrize(("entry", "message"), BAD_INPUTS)
def test_bad_schedules_exit_2_with_the_yaml_path_and_leave_the_store(
    applied: Project, entry: str, message: str
) -> None:
    before = stored(applied)
    configure(applied, f"schedules:\n  {entry}\n")
    done = applied.run("schedule", "apply", "--yes")
    assert done.returncode == 2
    assert re.search(r"stem\.yaml:\d+:\d+: " + re.escape(message), done.stderr), done.stderr
    assert done.stdout == ""
    assert stored(applied) == before


def test_list_and_show_as_json(applied: Project) -> None:
    rows = applied.run_json("schedule", "list", "--json")
    assert [row["name"] for row in rows] == ["digest", "pulse"]
    digest = applied.run_json("schedule", "show", "digest", "--json")
    for key in ("last_run_at", "next_run_at", "total_run_count", "last_error", "enabled"):
        assert key in digest
    assert digest["enabled"] is True and digest["total_run_count"] == 0
    assert digest["next_run_at"].endswith(("T08:00:00+01:00", "T08:00:00+02:00"))
    unknown = applied.run("schedule", "show", "nope")
    assert unknown.returncode == 1 and "no schedule entry 'nope'" in unknown.stderr


def test_dry_run_prints_iso_times_in_the_entry_zone(applied: Project) -> None:
    spec = applied.run(
        "schedule", "dry-run", "--spec", "cron:30 2 * * *", "--timezone", "Europe/Paris",
        "--from", "2024-03-30T12:00", "--count", "3",
    )  # fmt: skip
    assert spec.returncode == 0, spec.stderr
    assert spec.stdout.splitlines() == [
        "2024-03-31T03:00:00+02:00",  # 02:30 does not exist that night: first instant after
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]
    by_id = applied.run(
        "schedule", "dry-run", "--id", "digest", "--from", "2024-10-26T09:00", "--count", "2"
    )
    assert by_id.stdout.splitlines() == ["2024-10-27T08:00:00+01:00", "2024-10-28T08:00:00+01:00"]
    bad = applied.run("schedule", "dry-run", "--spec", "cron:0 8 * *")
    assert bad.returncode == 2 and "must have exactly 5 fields" in bad.stderr
    neither = applied.run("schedule", "dry-run")
    assert neither.returncode == 2
    unknown = applied.run("schedule", "dry-run", "--id", "nope")
    assert unknown.returncode == 1


def test_a_past_at_shows_the_one_fire_beat_makes_and_nothing_once_fired(project: Project) -> None:
    configure(project, "schedules:\n  once: {task: record, spec: 'at:2020-01-01T09:00:00Z'}\n")
    past = ["2020-01-01T09:00:00+00:00"]  # beat fires it once, at once, when first applied
    assert (
        project.run("schedule", "dry-run", "--spec", "at:2020-01-01T09:00:00Z").stdout.split()
        == past
    )
    assert project.run("schedule", "dry-run", "--id", "once").stdout.split() == past  # declared
    assert project.run("schedule", "apply", "--yes").returncode == 0
    assert project.run_json("schedule", "show", "once", "--json")["next_run_at"] == past[0]
    assert project.run("schedule", "dry-run", "--id", "once").stdout.split() == past  # stored
    project.start("beat", "-C", "stem.yaml")
    wait_until(lambda: stored(project)["once"]["enabled"] is False, 30, "beat never fired it")
    spent = project.run("schedule", "dry-run", "--id", "once")
    assert spent.returncode == 0 and spent.stdout == ""
    assert project.run_json("schedule", "show", "once", "--json")["next_run_at"] is None


def test_disable_enable_and_remove(applied: Project) -> None:
    assert applied.run("schedule", "disable", "pulse").returncode == 0
    assert stored(applied)["pulse"]["enabled"] is False
    assert stored(applied)["pulse"]["next_run_at"] is None
    assert applied.run("schedule", "enable", "pulse").returncode == 0
    assert stored(applied)["pulse"]["enabled"] is True
    assert applied.run("schedule", "enable", "nope").returncode == 1
    refused = applied.run("schedule", "remove", "pulse")
    assert refused.returncode == 2 and "pulse" in stored(applied)
    removed = applied.run("schedule", "remove", "pulse", "--yes")
    assert removed.returncode == 0 and "the next apply adds it back" in removed.stderr
    assert "pulse" not in stored(applied)
    assert applied.run("schedule", "remove", "pulse", "--yes").returncode == 1
