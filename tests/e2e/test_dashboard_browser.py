"""`stemrun dashboard` in real headless Chromium (Debian's, driven by Playwright) over a live
`stemrun worker` on the embedded SQLite store: every page loads, a dead letter is replayed by
clicking through the confirmation and then succeeds, hostile task args stay inert text, and
`--read-only` refuses a forged POST.

Every wait is for an event (a selector, an attribute, a terminal state) with a timeout.
Screenshots of the pages land in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCHEDULES = """
schedules:
  hourly-record:
    task: record
    spec: "every:1h"
    args: {n: 7}
"""
HOSTILE = "<script>alert('xss')</script><img src=x onerror=alert('img')>"
TIMEOUT_MS = 15_000


def _absent(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: run scripts/browsers.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright (never a downloaded browser build)."""
    if not CHROMIUM.exists():
        _absent(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _absent("playwright is not installed (the `test` extra)")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page that records every dialog it is shown."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.dialogs = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    yield tab
    context.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_dashboard(project: Project, *extra: str) -> str:
    """Start `stemrun dashboard` on a free port; its base URL once it answers."""
    port = free_port()
    proc = project.start("dashboard", "--port", str(port), *extra)
    base = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: proc.poll() is not None or _answers(f"{base}/api/overview"),
        30,
        f"dashboard did not answer:\n{project.logs()}",
    )
    assert proc.poll() is None, project.logs()
    return base


def dead_letter(project: Project) -> str:
    """A `flaky` task that exhausted its retries (the worker is running)."""
    task_id = project.run("enqueue", "flaky").stdout.strip()
    done = project.run("status", task_id, "--wait", "--timeout", "30s", "--json")
    assert json.loads(done.stdout)["state"] == "failed", done.stderr
    return task_id


def test_pages_load_and_a_dead_letter_is_replayed_by_clicking(
    project: Project, page: Any, tmp_path: Path
) -> None:
    with (project.root / "stem.yaml").open("a") as config:
        config.write(SCHEDULES)
    assert project.run("schedule", "apply", "--yes").returncode == 0
    project.start("worker", "-n", "browser-worker")
    task_id = dead_letter(project)
    base = start_dashboard(project)

    page.goto(f"{base}/")
    page.wait_for_selector("#queues tr[data-queue='default']")
    page.wait_for_selector("#workers >> text=browser-worker")
    page.wait_for_selector("#live[data-refreshes]")  # the live refresh came back
    assert page.inner_text("#queues tr[data-queue='default'] td:nth-child(5)") == "1"
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

    page.goto(f"{base}/tasks?state=failed")
    page.wait_for_selector(f"#task-list >> text={task_id}")
    page.click(f"#task-list >> text={task_id}")
    page.wait_for_selector("#error >> text=ConnectionError")
    assert "downstream still broken" in page.inner_text("#error")
    page.screenshot(path=str(tmp_path / "task-failed.png"), full_page=True)

    (project.root / "fixed").write_text("")  # the downstream is repaired: a replay succeeds
    page.goto(f"{base}/dead-letters")
    page.check(f"tr[data-id='{task_id}'] input[type=checkbox]")
    page.screenshot(path=str(tmp_path / "dead-letters.png"), full_page=True)
    page.click("#replay-selected")
    page.wait_for_selector(f"#confirm-list >> text={task_id}")
    page.screenshot(path=str(tmp_path / "confirm.png"), full_page=True)
    page.click("#confirm")
    page.wait_for_selector(".notice >> text=replayed 1 task(s)")

    done = project.run("status", task_id, "--wait", "--timeout", "30s", "--json")
    assert json.loads(done.stdout)["state"] == "succeeded", done.stderr
    page.goto(f"{base}/tasks/{task_id}")
    assert page.inner_text("#task-state") == "succeeded"
    assert page.inner_text("#result").strip() == '"fixed"'

    page.goto(f"{base}/schedules")
    row = "tr[data-schedule='hourly-record']"
    page.wait_for_selector(f"{row} >> text=every:1h")
    page.click(f"{row} button")
    page.wait_for_selector(".notice >> text=hourly-record disabled")
    page.wait_for_selector(f"{row} button >> text=Enable")
    page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)
    assert page.dialogs == []


def test_hostile_args_render_as_text_and_a_queued_task_can_be_cancelled(
    project: Project, page: Any, tmp_path: Path
) -> None:
    args = json.dumps({"n": HOSTILE})
    task_id = project.run("enqueue", "record", "--args", args).stdout.strip()
    base = start_dashboard(project)

    page.goto(f"{base}/tasks/{task_id}")
    page.wait_for_selector("#args")
    assert HOSTILE in page.inner_text("#args")  # shown, as text
    assert page.locator("#args script, #args img").count() == 0
    assert page.evaluate("document.querySelectorAll('main script, main img').length") == 0
    page.screenshot(path=str(tmp_path / "task-hostile.png"), full_page=True)

    page.click("#cancel")
    page.wait_for_selector("#task-state >> text=cancelled")
    assert page.dialogs == []  # neither <script> nor onerror ran


def test_read_only_hides_actions_and_refuses_a_forged_post(project: Project, page: Any) -> None:
    task_id = project.run("enqueue", "record", "-a", "n=1").stdout.strip()
    base = start_dashboard(project, "--read-only")

    page.goto(f"{base}/tasks/{task_id}")
    page.wait_for_selector("header .badge >> text=read-only")
    assert page.locator("#cancel").count() == 0
    forged = page.request.post(f"{base}/tasks/{task_id}/cancel", form={"csrf_token": "x" * 64})
    assert forged.status == 403
    assert "read-only" in forged.text()
    status = project.run_json("status", task_id, "--json")
    assert status["state"] == "queued"
