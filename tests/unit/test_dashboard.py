"""The dashboard app on in-memory stores: pages, escaping, CSRF, read-only mode and auth."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient

from stemrun.backends.memory import MemoryBackend
from stemrun.brokers.base import DeadLetter
from stemrun.brokers.memory import MemoryBroker
from stemrun.client import Stem
from stemrun.config import config_from_mapping
from stemrun.dashboard.app import create_app
from stemrun.dashboard.security import Guard
from stemrun.dashboard.views import Console
from stemrun.schedules.memory import MemoryScheduleStore
from stemrun.schedules.store import ScheduleEntry
from stemrun.state import TaskState

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def stem(tmp_path: Path) -> Iterator[Stem]:
    config = config_from_mapping(
        {
            "broker": "memory://",
            "queues": {"default": {}, "mail": {}},
            "tasks": {
                "add": {"handler": "x:add"},
                "mail.send": {"handler": "x:y", "queue": "mail"},
            },
        },
        root_dir=tmp_path,
    )
    with Stem(config, broker=MemoryBroker(), backend=MemoryBackend()) as client:
        yield client


@pytest.fixture
def schedules() -> MemoryScheduleStore:
    store = MemoryScheduleStore()
    store.add(ScheduleEntry(name="nightly", task="add", spec="every:1h", next_run_at=1.0))
    return store


def client_for(
    stem: Stem, schedules: MemoryScheduleStore, *, read_only: bool = False, token: str | None = None
) -> TestClient:
    app = create_app(Console(stem, schedules), Guard(token), read_only=read_only)
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def web(stem: Stem, schedules: MemoryScheduleStore) -> TestClient:
    return client_for(stem, schedules)


def csrf(page_html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page_html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def dead_letter(stem: Stem, task: str = "add", args: dict[str, object] | None = None) -> str:
    task_id = stem.enqueue(task, args or {"x": 1})
    queue = stem.status(task_id).queue
    [delivery] = stem.broker.fetch([queue], 1, consumer="t", lease_s=30)
    error = {"type": "ValueError", "message": "bad <b>input</b>", "traceback": "Traceback ..."}
    entry = DeadLetter(
        id=task_id,
        queue=queue,
        body=delivery.body,
        reason="max-retries-exhausted",
        task=task,
        attempt=3,
        dead_at=1.0,
        error=error,
    )
    assert stem.broker.dead_letter(delivery, entry)
    return task_id


def test_every_page_renders_with_security_headers(web: TestClient) -> None:
    for path in ("/", "/tasks", "/dead-letters", "/schedules", "/static/dashboard.css"):
        response = web.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"


def test_overview_shows_queue_depths_and_the_live_json(web: TestClient, stem: Stem) -> None:
    stem.enqueue("mail.send", {"to": "a"})
    dead_letter(stem)
    page = web.get("/").text
    assert 'data-queue="mail"' in page and 'data-live="/api/overview"' in page
    data = web.get("/api/overview").json()
    by_name = {q["name"]: q for q in data["queues"]}
    assert by_name["mail"]["pending"] == 1 and by_name["default"]["dead"] == 1
    assert set(data["fragments"]) == {"queues", "workers", "chart"}
    assert "<polyline" in data["fragments"]["chart"]


def test_task_args_are_escaped_never_markup(web: TestClient, stem: Stem) -> None:
    task_id = stem.enqueue("add", {"name": EVIL})
    page = web.get(f"/tasks/{task_id}").text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page


def test_task_page_shows_error_traceback_and_unknown_ids_are_404(
    web: TestClient, stem: Stem
) -> None:
    task_id = dead_letter(stem)
    stem.backend.replace(
        stem.status(task_id).__class__(
            id=task_id,
            task="add",
            state=TaskState.FAILED,
            queue="default",
            attempt=3,
            error={"type": "KeyError", "message": "<i>k</i>", "traceback": "Traceback: boom"},
        )
    )
    page = web.get(f"/tasks/{task_id}").text
    assert "KeyError" in page and "&lt;i&gt;k&lt;/i&gt;" in page and "Traceback: boom" in page
    assert 'id="cancel"' not in page  # terminal: nothing to cancel
    assert web.get("/tasks/never-enqueued").status_code == 404


def test_task_list_filters_by_state_task_and_queue(web: TestClient, stem: Stem) -> None:
    mail = stem.enqueue("mail.send", {"to": "a"})
    add = stem.enqueue("add")
    stem.backend.cancel(add, 0.0)
    assert mail in web.get("/tasks?queue=mail").text
    assert add not in web.get("/tasks?queue=mail").text
    listed = web.get("/tasks?state=cancelled").text
    assert add in listed and mail not in listed
    assert mail in web.get("/tasks?task=mail.send").text
    assert web.get("/tasks?state=bogus").status_code == 400
    assert web.get(f"/tasks?id={add}").headers["location"] == f"/tasks/{add}"


def test_cancel_needs_a_csrf_token_then_cancels(web: TestClient, stem: Stem) -> None:
    task_id = stem.enqueue("add")
    page = web.get(f"/tasks/{task_id}").text
    assert web.post(f"/tasks/{task_id}/cancel").status_code == 403
    forged = web.post(f"/tasks/{task_id}/cancel", data={"csrf_token": "0" * 64})
    assert forged.status_code == 403
    assert stem.status(task_id).state is TaskState.QUEUED
    done = web.post(f"/tasks/{task_id}/cancel", data={"csrf_token": csrf(page)})
    assert done.status_code == 303
    assert stem.status(task_id).state is TaskState.CANCELLED


def test_a_token_only_works_with_the_cookie_it_was_issued_for(
    web: TestClient, stem: Stem, schedules: MemoryScheduleStore
) -> None:
    task_id = stem.enqueue("add")
    token = csrf(web.get(f"/tasks/{task_id}").text)
    other = client_for(stem, schedules)  # another browser (and another process secret)
    other.get("/")
    assert other.post(f"/tasks/{task_id}/cancel", data={"csrf_token": token}).status_code == 403
    header = {"x-csrf-token": token}
    assert web.post(f"/tasks/{task_id}/cancel", headers=header).status_code == 303


def test_dead_letter_replay_goes_through_a_confirmation(web: TestClient, stem: Stem) -> None:
    first, second = dead_letter(stem, args={"e": EVIL}), dead_letter(stem)
    page = web.get("/dead-letters").text
    assert "bad &lt;b&gt;input&lt;/b&gt;" in page and "max-retries-exhausted" in page
    token = csrf(page)
    confirm = web.post(
        "/dead-letters/confirm", data={"csrf_token": token, "action": "replay", "id": first}
    )
    assert confirm.status_code == 200 and first in confirm.text and second not in confirm.text
    assert len(stem.dead_letters()) == 2  # nothing happens before the confirmation
    done = web.post("/dead-letters/replay", data={"csrf_token": csrf(confirm.text), "id": first})
    assert done.status_code == 303 and "replayed+1" in done.headers["location"]
    assert [e.id for e in stem.dead_letters()] == [second]
    assert stem.status(first).state is TaskState.QUEUED


def test_purge_all_of_one_queue(web: TestClient, stem: Stem) -> None:
    dead_letter(stem)
    kept = dead_letter(stem, task="mail.send")
    token = csrf(web.get("/dead-letters?queue=default").text)
    fields = {"csrf_token": token, "action": "purge", "queue": "default"}
    assert "every</strong> dead letter" in web.post("/dead-letters/confirm", data=fields).text
    done = web.post("/dead-letters/purge", data={"csrf_token": token, "queue": "default"})
    assert done.status_code == 303
    assert [e.id for e in stem.dead_letters()] == [kept]


def test_purge_one_selected_dead_letter(web: TestClient, stem: Stem) -> None:
    doomed, kept = dead_letter(stem), dead_letter(stem)
    token = csrf(web.get("/dead-letters?queue=default").text)
    fields = {"csrf_token": token, "action": "purge-selected", "queue": "default", "id": doomed}
    confirm = web.post("/dead-letters/confirm", data=fields)
    assert confirm.status_code == 200 and doomed in confirm.text and kept not in confirm.text
    assert "every</strong>" not in confirm.text
    assert len(stem.dead_letters()) == 2  # nothing happens before the confirmation
    forged = web.post("/dead-letters/purge", data={"id": doomed, "queue": "default"})
    assert forged.status_code == 403
    apply = {"csrf_token": csrf(confirm.text), "queue": "default", "id": doomed}
    done = web.post("/dead-letters/purge", data=apply)
    assert done.status_code == 303 and "purged+1" in done.headers["location"]
    assert [e.id for e in stem.dead_letters()] == [kept]


def test_purge_selected_with_nothing_selected_purges_nothing(web: TestClient, stem: Stem) -> None:
    dead_letter(stem)
    token = csrf(web.get("/dead-letters").text)
    done = web.post("/dead-letters/confirm", data={"csrf_token": token, "action": "purge-selected"})
    assert done.status_code == 303 and "nothing+selected" in done.headers["location"]
    assert len(stem.dead_letters()) == 1


def test_schedules_can_be_disabled_and_enabled(
    web: TestClient, schedules: MemoryScheduleStore
) -> None:
    page = web.get("/schedules").text
    assert "nightly" in page and "every:1h" in page
    token = csrf(page)
    assert web.post("/schedules/nightly/disable", data={"csrf_token": token}).status_code == 303
    entry = schedules.get("nightly")
    assert entry is not None and not entry.enabled
    web.post("/schedules/nightly/enable", data={"csrf_token": token})
    entry = schedules.get("nightly")
    assert entry is not None and entry.enabled and entry.next_run_at is not None


def test_read_only_hides_actions_and_refuses_posts(
    stem: Stem, schedules: MemoryScheduleStore
) -> None:
    web = client_for(stem, schedules, read_only=True)
    task_id = stem.enqueue("add")
    dead = dead_letter(stem)
    pages = [web.get(p).text for p in (f"/tasks/{task_id}", "/dead-letters", "/schedules")]
    assert not any('method="post"' in page or "csrf_token" in page for page in pages)
    for path in (f"/tasks/{task_id}/cancel", "/dead-letters/replay", "/schedules/nightly/disable"):
        assert web.post(path, data={"id": dead}).status_code == 403
    assert stem.status(task_id).state is TaskState.QUEUED
    assert len(stem.dead_letters()) == 1


def test_token_auth_accepts_bearer_and_basic_password_only(
    stem: Stem, schedules: MemoryScheduleStore
) -> None:
    web = client_for(stem, schedules, token="s3cret")
    refused = web.get("/")
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    assert web.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200
    basic = base64.b64encode(b"anyone:s3cret").decode()
    assert web.get("/", headers={"authorization": f"Basic {basic}"}).status_code == 200
    assert web.get("/", headers={"authorization": "Basic !!!"}).status_code == 401


def test_a_group_id_shows_its_members_states(web: TestClient, stem: Stem) -> None:
    group_id = stem.canvas.group([("add", {"x": 1}), "mail.send"])
    page = web.get(f"/tasks/{group_id}").text
    assert "Group: 0/2 done" in page
    members = page.split('id="members"', 1)[1].split("</table>", 1)[0]
    assert members.count('class="state queued"') == 2 and f"{group_id}.1" in members
