"""The monolith example: one process serves an HTTP API that enqueues tasks and runs the worker
(thread pool) and the beat that execute them, all on the embedded SQLite store.

    python examples/monolith_service/app.py [--host 127.0.0.1] [--port 8000]
    cd examples/monolith_service && uvicorn app:app          # the same app, under uvicorn's CLI

Endpoints (JSON in, JSON out):

    POST /tasks       {"task": "math.add", "args": {"x": 1, "y": 2}}   -> 202 {"id": ...}
                      optional: "queue", "priority" (0-9), "countdown" and "expires" (seconds),
                      "headers" (object), "id" (an id that exists is not enqueued again)
    GET  /tasks/{id}  the status record; groups and chords add their members; 404 when unknown
    POST /groups      {"tasks": [{"task": ..., "args": {...}}, ...], "callback": {...}}
                      -> 202 {"id": ...}: a chord with "callback", else a group

The worker and the beat start and stop with the application's lifespan: on SIGTERM or Ctrl-C
uvicorn stops accepting requests, then the worker drains (finishes its running tasks, hands
buffered ones back) before the process exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stemrun import Beat, Signature, Stem, StemrunError, TaskState, UsageError, Worker
from stemrun.config import load_config
from stemrun.logs import setup_logging

#: stem.yaml beside this file, unless STEM_CONFIG names another one.
CONFIG_PATH = Path(os.environ.get("STEM_CONFIG") or Path(__file__).with_name("stem.yaml"))
#: How long shutdown waits for running tasks; a task still running after it is redelivered
#: once its lease lapses (at-least-once), so the process may exit without it.
DRAIN_TIMEOUT_S = 30.0


class BadRequest(Exception):
    """The request body is not what the endpoint accepts (400)."""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Open the stores, start the worker and beat threads; drain and close them at shutdown."""
    config = load_config(CONFIG_PATH)
    setup_logging(config.logging.level, config.logging.format)
    stem = Stem(config)
    # Open both stores now: a bad URL fails the start-up, not the first request, and request
    # threads never race to open them.
    _ = stem.broker, stem.backend
    worker = Worker(config, pool="thread", install_signal_handlers=False)
    beat = Beat(config, install_signal_handlers=False)
    threads = [
        threading.Thread(target=worker.run, name="stemrun-worker", daemon=True),
        threading.Thread(target=beat.run, name="stemrun-beat", daemon=True),
    ]
    for thread in threads:
        thread.start()
    app.state.stem = stem
    try:
        yield
    finally:
        beat.stop()
        worker.stop()  # graceful: finish running tasks, hand buffered ones back
        for thread in threads:
            await run_in_threadpool(thread.join, DRAIN_TIMEOUT_S)
        stem.close()


def endpoint(handler: Callable[[Stem, Request, Any], JSONResponse]) -> Callable[[Request], Any]:
    """Wrap a blocking handler(stem, request, body): run it off the event loop, map errors."""

    async def run(request: Request) -> JSONResponse:
        stem: Stem = request.app.state.stem
        try:
            body = await request.json() if request.method == "POST" else None
        except json.JSONDecodeError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        try:
            return await run_in_threadpool(handler, stem, request, body)
        except (BadRequest, UsageError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except StemrunError as exc:
            # A store is down or refused the write: the client may retry later.
            return JSONResponse({"error": str(exc)}, status_code=503)

    return run


def enqueue_task(stem: Stem, request: Request, body: Any) -> JSONResponse:
    """POST /tasks: publish one task; 202 with its id."""
    call = _call(body)
    task_id = stem.enqueue(
        call.task,
        call.args,
        headers=call.headers,
        queue=call.queue,
        priority=call.priority,
        countdown=_optional(body, "countdown", (int, float)),
        expires=_optional(body, "expires", (int, float)),
        task_id=_optional(body, "id", str),
    )
    return _accepted(task_id)


def start_group(stem: Stem, request: Request, body: Any) -> JSONResponse:
    """POST /groups: a group of tasks, or a chord when a callback is given; 202 with its id."""
    if not isinstance(body, Mapping) or not isinstance(body.get("tasks"), list):
        raise BadRequest('expected {"tasks": [{"task": ..., "args": {...}}, ...]}')
    members = [_call(item) for item in body["tasks"]]
    if body.get("callback") is not None:
        return _accepted(stem.canvas.chord(members, _call(body["callback"])))
    return _accepted(stem.canvas.group(members))


def task_status(stem: Stem, request: Request, body: Any) -> JSONResponse:
    """GET /tasks/{id}: the status record (with members for a group or chord); 404 if unknown."""
    record = stem.status(request.path_params["task_id"])
    if record.state is TaskState.UNKNOWN:
        return JSONResponse({"id": record.id, "state": "unknown"}, status_code=404)
    view = stem.canvas.describe(record) or {}
    return JSONResponse({**record.to_dict(), **view})


def _call(body: Any) -> Signature:
    """One task call from a JSON object: task, args, optional queue, priority and headers."""
    if not isinstance(body, Mapping) or not isinstance(body.get("task"), str):
        raise BadRequest('expected a JSON object with a "task" name, e.g. {"task": "math.add"}')
    return Signature(
        task=body["task"],
        args=_optional(body, "args", dict) or {},
        queue=_optional(body, "queue", str),
        priority=_optional(body, "priority", int),
        headers=_optional(body, "headers", dict) or {},
    )


def _optional(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """body[key] when present and of the JSON type the endpoint expects; None when absent."""
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise BadRequest(f'"{key}" has the wrong type ({type(value).__name__})')
    return value


def _accepted(task_id: str) -> JSONResponse:
    return JSONResponse({"id": task_id, "status": f"/tasks/{task_id}"}, status_code=202)


app = Starlette(
    routes=[
        Route("/tasks", endpoint(enqueue_task), methods=["POST"]),
        Route("/tasks/{task_id:str}", endpoint(task_status), methods=["GET"]),
        Route("/groups", endpoint(start_group), methods=["POST"]),
    ],
    lifespan=lifespan,
)


def main() -> None:
    """Serve the app with uvicorn (loopback by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
