"""The enqueue API of the microservice example: a producer that publishes signed tasks to Redis
for workers running elsewhere (`stemrun worker`). It never imports the task handlers.

    python examples/microservice/enqueuer.py [--host 127.0.0.1] [--port 8443]

    POST /tasks       {"task": "orders.confirm", "args": {...}}  -> 202 {"id": ...}
                      optional: "queue", "priority" (0-9), "countdown" (seconds), "headers",
                      "id" (an idempotency key: an id that exists is not enqueued again)
    GET  /tasks/{id}  the status record; 404 for an id never enqueued

HTTPS when ENQUEUER_TLS_CERT and ENQUEUER_TLS_KEY name a certificate and its key; with
ENQUEUER_TLS_CLIENT_CA as well, every client must present a certificate signed by that CA
(mutual TLS) or the handshake is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stemrun import Stem, StemrunError, TaskState, UsageError
from stemrun.config import load_config
from stemrun.logs import setup_logging

#: stem.yaml beside this file, unless STEM_CONFIG names another one.
CONFIG_PATH = Path(os.environ.get("STEM_CONFIG") or Path(__file__).with_name("stem.yaml"))


class BadRequest(Exception):
    """The request body is not what the endpoint accepts (400)."""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Connect to the stores at start-up (fail fast), close them at shutdown."""
    config = load_config(CONFIG_PATH)
    setup_logging(config.logging.level, config.logging.format)
    stem = Stem(config)
    # Open both stores now: an unreachable Redis or a TLS problem fails the start-up with the
    # handshake diagnostics, not the first request; request threads never race to open them.
    _ = stem.broker, stem.backend
    app.state.stem = stem
    try:
        yield
    finally:
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
            # Redis is down or refused the write: the client may retry (with the same "id").
            return JSONResponse({"error": str(exc)}, status_code=503)

    return run


def enqueue_task(stem: Stem, request: Request, body: Any) -> JSONResponse:
    """POST /tasks: publish one signed task; 202 with its id."""
    if not isinstance(body, Mapping) or not isinstance(body.get("task"), str):
        raise BadRequest('expected a JSON object with a "task" name')
    task_id = stem.enqueue(
        body["task"],
        _optional(body, "args", dict),
        headers=_optional(body, "headers", dict),
        queue=_optional(body, "queue", str),
        priority=_optional(body, "priority", int),
        countdown=_optional(body, "countdown", (int, float)),
        task_id=_optional(body, "id", str),
    )
    return JSONResponse({"id": task_id, "status": f"/tasks/{task_id}"}, status_code=202)


def task_status(stem: Stem, request: Request, body: Any) -> JSONResponse:
    """GET /tasks/{id}: the status record; 404 for an id never enqueued (or expired)."""
    record = stem.status(request.path_params["task_id"])
    if record.state is TaskState.UNKNOWN:
        return JSONResponse({"id": record.id, "state": "unknown"}, status_code=404)
    return JSONResponse(record.to_dict())


def _optional(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """body[key] when present and of the JSON type the endpoint expects; None when absent."""
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise BadRequest(f'"{key}" has the wrong type ({type(value).__name__})')
    return value


app = Starlette(
    routes=[
        Route("/tasks", endpoint(enqueue_task), methods=["POST"]),
        Route("/tasks/{task_id:str}", endpoint(task_status), methods=["GET"]),
    ],
    lifespan=lifespan,
)


def tls_options(env: Mapping[str, str]) -> dict[str, Any]:
    """uvicorn's TLS settings from ENQUEUER_TLS_*; empty (plain HTTP) when no certificate is set.

    Raises SystemExit when only one of the certificate and its key is given.
    """
    cert, key = env.get("ENQUEUER_TLS_CERT"), env.get("ENQUEUER_TLS_KEY")
    client_ca = env.get("ENQUEUER_TLS_CLIENT_CA")
    if not cert and not key:
        if client_ca:
            sys.exit("ENQUEUER_TLS_CLIENT_CA needs ENQUEUER_TLS_CERT and ENQUEUER_TLS_KEY too")
        return {}
    if not cert or not key:
        sys.exit("set both ENQUEUER_TLS_CERT and ENQUEUER_TLS_KEY (or neither, for plain HTTP)")
    options: dict[str, Any] = {"ssl_certfile": cert, "ssl_keyfile": key}
    if client_ca:
        # CERT_REQUIRED: a client without a certificate signed by this CA fails the handshake.
        options.update(ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def main() -> None:
    """Serve the API with uvicorn (loopback by default), over HTTPS when configured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port to bind (default 8443)")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, **tls_options(os.environ))


if __name__ == "__main__":
    main()
