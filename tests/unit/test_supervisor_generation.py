"""Which children a reload restarts for which edit of stem.yaml (docs/supervisor.md)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from stemrun.config import config_from_mapping
from stemrun.config.model import Config
from stemrun.errors import UsageError
from stemrun.supervisor.children import Launch
from stemrun.supervisor.generation import (
    ChildSpec,
    Selection,
    check_only,
    diff,
    restart_workers,
    wanted,
)

BASE: dict[str, Any] = {
    "version": 1,
    "broker": "sqlite:///.stem/stem.db",
    "queues": {"default": {}, "mail": {}, "reports": {}},
    "tasks": {
        "record": {"handler": "app:record", "queue": "default"},
        "email.send": {"handler": "app:send", "queue": "mail"},
        "report": {"handler": "app:report", "queue": "reports"},
    },
    "workers": {
        "web": {"queues": ["default", "mail"], "concurrency": 2, "replicas": 2},
        "batch": {"queues": ["reports"], "concurrency": 1},
    },
    "schedules": {"nightly": {"task": "report", "spec": "cron:0 3 * * *"}},
}


def config(edit: Any = None) -> Config:
    data = copy.deepcopy(BASE)
    if edit is not None:
        edit(data)
    return config_from_mapping(data, root_dir=Path("/srv/app"), env={})


def specs(cfg: Config, **selection: Any) -> dict[str, ChildSpec]:
    return wanted(cfg, Selection(**selection))


def restarted_by(edit: Any) -> tuple[list[str], list[str], list[str]]:
    """(started, stopped, restarted) keys for an edit of BASE."""
    change = diff(specs(config()), specs(config(edit)))
    return (
        [s.key for s in change.start],
        [s.key for s in change.stop],
        [s.key for s in change.restart],
    )


def test_one_child_per_replica_and_one_beat() -> None:
    assert sorted(specs(config())) == ["beat", "worker:batch:0", "worker:web:0", "worker:web:1"]


def test_no_beat_without_schedules_when_disabled_or_with_no_beat() -> None:
    assert "beat" not in specs(config(lambda d: d.pop("schedules")))
    assert "beat" not in specs(config(lambda d: d.update(beat={"enabled": False})))
    assert "beat" not in specs(config(), beat=False)


def test_only_limits_groups_and_unknown_group_names_the_known_ones() -> None:
    assert sorted(specs(config(), only=("batch",), beat=False)) == ["worker:batch:0"]
    with pytest.raises(UsageError, match=r"'nope'.*known groups: batch, web"):
        check_only(config(), ("nope",))


def test_without_workers_section_one_default_worker() -> None:
    cfg = config(lambda d: d.pop("workers"))
    worker = specs(cfg, beat=False)["worker::0"]
    assert worker.group is None
    argv = Launch(host="h").argv(worker, "h.default.0", Path("/srv/app/stem.yaml"))
    assert "--group" not in argv and argv[-2:] == ["-n", "h.default.0"]


def test_identical_file_changes_nothing() -> None:
    assert diff(specs(config()), specs(config())).empty


def test_concurrency_change_restarts_only_that_groups_replicas() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["workers"]["web"]["concurrency"] = 4

    assert restarted_by(edit) == ([], [], ["worker:web:0", "worker:web:1"])


def test_new_group_starts_and_removed_group_drains() -> None:
    def add(d: dict[str, Any]) -> None:
        d["queues"]["bulk"] = {}
        d["workers"]["bulk"] = {"queues": ["bulk"], "concurrency": 1}

    def remove(d: dict[str, Any]) -> None:
        del d["workers"]["batch"]

    # Beat restarts too (it is cheap: no tasks in flight) so a fire may target the new queue.
    assert restarted_by(add) == (["worker:bulk:0"], [], ["beat"])
    assert restarted_by(remove) == ([], ["worker:batch:0"], [])


def test_replicas_change_adds_or_drains_replicas_without_touching_the_others() -> None:
    def up(d: dict[str, Any]) -> None:
        d["workers"]["web"]["replicas"] = 3

    def down(d: dict[str, Any]) -> None:
        d["workers"]["web"]["replicas"] = 1

    assert restarted_by(up) == (["worker:web:2"], [], [])
    assert restarted_by(down) == ([], ["worker:web:1"], [])


def test_task_option_change_restarts_the_groups_consuming_its_queue_and_beat() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["tasks"]["email.send"]["max_retries"] = 9

    change = diff(specs(config()), specs(config(edit)))
    assert [s.key for s in change.restart] == ["beat", "worker:web:0", "worker:web:1"]
    assert change.why["worker:web:0"] == ("tasks",)


def test_queue_rate_limit_change_restarts_its_consumers_only() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["queues"]["reports"] = {"rate_limit": "5/s"}

    assert restarted_by(edit) == ([], [], ["beat", "worker:batch:0"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(namespace="other"),
        lambda d: d.update(broker="sqlite:///.stem/other.db"),
        lambda d: d.update(signing={"keys": {"k": "c2VjcmV0c2VjcmV0c2VjcmV0"}, "active_key": "k"}),
        lambda d: d.update(tls={"allow_insecure": True}),
    ],
    ids=["namespace", "broker", "signing", "tls"],
)
def test_store_namespace_signing_tls_changes_restart_everything(edit: Any) -> None:
    assert restarted_by(edit)[2] == ["beat", "worker:batch:0", "worker:web:0", "worker:web:1"]


def test_schedule_edit_restarts_nobody_but_beat_settings_restart_beat() -> None:
    def schedule(d: dict[str, Any]) -> None:
        d["schedules"]["nightly"]["spec"] = "cron:0 4 * * *"

    def beat(d: dict[str, Any]) -> None:
        d["beat"] = {"tick_interval": "2s"}

    assert restarted_by(schedule) == ([], [], [])
    assert restarted_by(beat) == ([], [], ["beat"])


def test_log_level_from_the_cli_wins_over_the_file() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["logging"] = {"level": "debug"}

    assert restarted_by(edit)[2] == ["beat", "worker:batch:0", "worker:web:0", "worker:web:1"]
    before, after = specs(config(), log_level="info"), specs(config(edit), log_level="info")
    assert diff(before, after).empty


def test_code_reload_restarts_every_worker_but_not_beat() -> None:
    new = specs(config())
    change = restart_workers(diff(specs(config()), new), new)
    assert [s.key for s in change.restart] == ["worker:batch:0", "worker:web:0", "worker:web:1"]
    assert change.why["worker:web:1"] == ("code",)


def test_replacement_names_are_unique_per_reload() -> None:
    launch = Launch(host="h", log_level="debug")
    web1 = specs(config())["worker:web:1"]
    assert launch.name(web1, 1) == "h.web.1"
    assert launch.name(web1, 3) == "h.web.1.g3"
    argv = launch.argv(web1, "h.web.1", Path("/srv/app/stem.yaml"))
    assert argv[1:] == [
        "-m", "stemrun", "worker", "-C", "/srv/app/stem.yaml", "--group", "web",
        "-n", "h.web.1", "--log-level", "debug",
    ]  # fmt: skip
