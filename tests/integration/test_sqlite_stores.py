"""SQLite-only behaviour: URLs, namespaces, error translation, durability across reopen."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from stemrun.backends.record import StatusRecord
from stemrun.backends.sqlite import SqliteBackend
from stemrun.brokers.base import Message
from stemrun.brokers.sqlite import SqliteBroker
from stemrun.errors import BackendError, BrokerError
from stemrun.sqlite_db import sqlite_path
from stemrun.state import TaskState
from stemrun.stores import open_backend, open_broker


def test_relative_url_resolves_against_base_dir(tmp_path: Path) -> None:
    broker = open_broker("sqlite:///.stem/stem.db", base_dir=tmp_path)
    broker.publish([Message(id="a", queue="q", body=b"x")])
    broker.close()
    assert (tmp_path / ".stem" / "stem.db").is_file()


def test_absolute_url(tmp_path: Path) -> None:
    assert sqlite_path(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert str(tmp_path).startswith("/")
    assert sqlite_path("sqlite:///rel/a.db", tmp_path) == tmp_path / "rel" / "a.db"


def test_relative_url_without_base_dir_uses_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///x.db") == tmp_path / "x.db"


@pytest.mark.parametrize("namespace", ["", "1abc", "a-b", "x; DROP TABLE y", "a b"])
def test_bad_namespace_is_refused(tmp_path: Path, namespace: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(BrokerError, match="namespace"):
        SqliteBroker(url, namespace=namespace)
    with pytest.raises(BackendError, match="namespace"):
        SqliteBackend(url, namespace=namespace)


def test_url_without_a_path_is_refused() -> None:
    with pytest.raises(BrokerError, match=r"sqlite://host/x\.db"):
        SqliteBroker("sqlite://host/x.db")


def test_unusable_location_names_the_url(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/sub/s.db"
    with pytest.raises(BrokerError, match=f"broker {url}"):
        SqliteBroker(url)


def test_not_a_database_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(BackendError, match="result backend"):
        SqliteBackend(f"sqlite:///{path}")


def test_use_after_close_is_a_broker_error(tmp_path: Path) -> None:
    broker = SqliteBroker(f"sqlite:///{tmp_path}/s.db")
    broker.close()
    with pytest.raises(BrokerError, match="publish"):
        broker.publish([Message(id="a", queue="q", body=b"x")])


def test_namespaces_share_a_file_without_seeing_each_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    one, two = SqliteBroker(url, namespace="one"), SqliteBroker(url, namespace="two")
    one.publish([Message(id="a", queue="q", body=b"x")])
    assert two.fetch(["q"], 10, consumer="c", lease_s=5) == []
    assert [d.id for d in one.fetch(["q"], 10, consumer="c", lease_s=5)] == ["a"]


def test_data_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    broker, backend = open_broker(url), open_backend(url)
    broker.publish([Message(id="a", queue="q", body=b"x", priority=3)])
    backend.create([StatusRecord(id="a", task="t", state=TaskState.QUEUED, queue="q")])
    broker.close()
    backend.close()
    [delivery] = open_broker(url).fetch(["q"], 1, consumer="c", lease_s=5)
    assert (delivery.id, delivery.priority) == ("a", 3)
    record = open_backend(url).get("a")
    assert record is not None and record.state == TaskState.QUEUED


def test_password_in_url_is_masked() -> None:
    with pytest.raises(BrokerError) as info:
        SqliteBroker("sqlite://user:secret@host/x.db")
    assert "secret" not in str(info.value)


def _publish_from_child(broker: SqliteBroker) -> None:
    broker.publish([Message(id="from-child", queue="q", body=b"x")])


def test_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    broker = SqliteBroker(f"sqlite:///{tmp_path}/s.db")
    broker.publish([Message(id="from-parent", queue="q", body=b"x")])
    child = multiprocessing.get_context("fork").Process(target=_publish_from_child, args=(broker,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    got = broker.fetch(["q"], 10, consumer="c", lease_s=5)
    assert sorted(d.id for d in got) == ["from-child", "from-parent"]
