"""The dashboard's Starlette app: pages, JSON for live refresh, and the guarded POST actions.

Store calls block, so handlers run them in the thread pool. Mutations are POSTs only, each
checked for read-only mode (403), then its CSRF token (403), then answered with a redirect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stemrun.dashboard.render import FILTERS
from stemrun.dashboard.security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, Guard
from stemrun.dashboard.views import STATES, Console
from stemrun.errors import StemrunError, UsageError

HERE = Path(__file__).parent
Handler = Callable[[Request], Awaitable[Response]]
#: Scripts and styles come from /static only, so an injected <script> could not run anyway.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class Dashboard:
    """The routes over one Console, with its guard and read-only flag."""

    def __init__(self, console: Console, guard: Guard, *, read_only: bool = False) -> None:
        self.console = console
        self.guard = guard
        self.read_only = read_only
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.filters.update(FILTERS)

    # -- plumbing -----------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A page, with the CSRF token of this browser's nonce (a new cookie if it has none)."""
        nonce = request.cookies.get(CSRF_COOKIE) or Guard.new_nonce()
        html = self.env.get_template(name).render(
            request_path=request.url.path,
            read_only=self.read_only,
            csrf_field=CSRF_FIELD,
            csrf_token=self.guard.csrf_token(nonce),
            notice=request.query_params.get("notice"),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != nonce:
            response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", path="/")
        return response

    def fragment(self, name: str, **context: Any) -> str:
        """A partial template rendered alone (live refresh swaps it in)."""
        return self.env.get_template(name).render(read_only=self.read_only, **context)

    async def form(self, request: Request) -> dict[str, list[str]]:
        """The POSTed urlencoded form (no multipart: the dashboard never uploads files)."""
        body = (await request.body()).decode("utf-8", errors="replace")
        return parse_qs(body, keep_blank_values=True)

    async def refuse(self, request: Request) -> tuple[Response | None, dict[str, list[str]]]:
        """A 403 for read-only mode or a missing/forged CSRF token, else None and the form."""
        if self.read_only:
            return plain("the dashboard is read-only"), {}
        fields = await self.form(request)
        token = request.headers.get(CSRF_HEADER) or _first(fields, CSRF_FIELD)
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), token):
            return plain("missing or invalid CSRF token; reload the page"), {}
        return None, fields

    # -- pages --------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Queues, throughput, workers; refreshed live from /api/overview."""
        data = await run_in_threadpool(self.console.overview)
        return self.render(request, "overview.html", **data)

    async def overview_json(self, request: Request) -> Response:
        """The overview as JSON, with the page's fragments re-rendered."""
        data = await run_in_threadpool(self.console.overview)
        fragments = {
            name: self.fragment(f"_{name}.html", **data) for name in ("queues", "workers", "chart")
        }
        return JSONResponse({**data, "fragments": fragments})

    async def tasks(self, request: Request) -> Response:
        """Look a task up by id, or list records by state / task / queue, paged."""
        params = request.query_params
        if params.get("id"):
            return RedirectResponse(f"/tasks/{_quote(params['id'].strip())}", status_code=303)
        filters = {k: params.get(k) or None for k in ("state", "task", "queue")}
        page = _page(params.get("page"))
        listing = await run_in_threadpool(
            self.console.task_list, filters["state"], filters["task"], filters["queue"], page
        )
        return self.render(
            request,
            "tasks.html",
            states=STATES,
            queues=list(self.console.stem.config.queues),
            filters=filters,
            page=page,
            page_query=lambda n: urlencode({**{k: v for k, v in filters.items() if v}, "page": n}),
            **listing,
        )

    async def task(self, request: Request) -> Response:
        """One task: args, result, error, progress, attempts, timeline, canvas members."""
        detail = await run_in_threadpool(self.console.task_detail, request.path_params["task_id"])
        return self.render(request, "task.html", 200 if detail["known"] else 404, **detail)

    async def dead_letters(self, request: Request) -> Response:
        """Dead letters with reason and error; select to replay or purge."""
        queue = request.query_params.get("queue") or None
        rows = await run_in_threadpool(self.console.dead_letters, queue)
        queues = list(self.console.stem.config.queues)
        return self.render(request, "dead_letters.html", rows=rows, queue=queue, queues=queues)

    async def schedules(self, request: Request) -> Response:
        """Schedule entries: next/last fire, drift, last error; enable / disable."""
        rows = await run_in_threadpool(self.console.schedules)
        return self.render(request, "schedules.html", rows=rows)

    # -- actions ------------------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        """Cancel a queued task or ask a running one to stop."""
        refused, _ = await self.refuse(request)
        if refused:
            return refused
        task_id = request.path_params["task_id"]
        after = await run_in_threadpool(self.console.cancel, task_id)
        notice = "cancel requested" if after is not None else "unknown task"
        return _back(f"/tasks/{_quote(task_id)}", notice)

    async def dead_confirm(self, request: Request) -> Response:
        """The confirmation step before a replay or purge: what exactly will happen.

        `purge-selected` purges the checked ids only (never everything when none is checked);
        `purge` purges every dead letter of the queue shown.
        """
        refused, fields = await self.refuse(request)
        if refused:
            return refused
        action = _first(fields, "action")
        if action not in ("replay", "purge", "purge-selected"):
            return plain("unknown action", 400)
        ids = [] if action == "purge" else fields.get("id", [])
        if action == "purge-selected":
            if not ids:
                return _back("/dead-letters", "nothing selected to purge")
            action = "purge"
        queue = _first(fields, "queue") or None
        entries = await run_in_threadpool(self.console.select_dead, ids, queue)
        return self.render(
            request, "confirm.html", action=action, ids=ids, queue=queue, entries=entries
        )

    async def dead_apply(self, request: Request) -> Response:
        """Replay or purge after confirmation."""
        refused, fields = await self.refuse(request)
        if refused:
            return refused
        queue = _first(fields, "queue") or None
        ids = fields.get("id", [])
        if request.path_params["action"] == "purge":
            # With ids, exactly those (as the confirmation listed); without, the whole queue.
            count = await run_in_threadpool(self.console.purge, queue, ids)
            return _back("/dead-letters", f"purged {count} dead letter(s)")
        if not ids:  # replay only what the confirmation page listed, never "whatever is there"
            return _back("/dead-letters", "nothing selected to replay")
        entries = await run_in_threadpool(self.console.select_dead, ids, queue)
        done = await run_in_threadpool(self.console.replay, entries)
        return _back("/dead-letters", f"replayed {len(done)} task(s): {' '.join(done)}")

    async def schedule_toggle(self, request: Request) -> Response:
        """Enable or disable one schedule entry."""
        refused, _ = await self.refuse(request)
        if refused:
            return refused
        name, enable = request.path_params["name"], request.path_params["action"] == "enable"
        found = await run_in_threadpool(self.console.set_schedule, name, enable)
        verb = "enabled" if enable else "disabled"
        return _back("/schedules", f"{name} {verb}" if found else f"no schedule {name!r}")

    def routes(self) -> list[Route | Mount]:
        """Every route of the app."""
        return [
            Route("/", self.overview),
            Route("/api/overview", self.overview_json),
            Route("/tasks", self.tasks),
            Route("/tasks/{task_id:path}/cancel", self.cancel, methods=["POST"]),
            Route("/tasks/{task_id:path}", self.task),
            Route("/dead-letters", self.dead_letters),
            Route("/dead-letters/confirm", self.dead_confirm, methods=["POST"]),
            Route("/dead-letters/{action:str}", self.dead_apply, methods=["POST"]),
            Route("/schedules", self.schedules),
            Route("/schedules/{name:path}/{action:str}", self.schedule_toggle, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


def create_app(console: Console, guard: Guard, *, read_only: bool = False) -> Starlette:
    """The dashboard ASGI app over `console`."""
    board = Dashboard(console, guard, read_only=read_only)

    async def guard_requests(request: Request, call_next: Handler) -> Response:
        if not guard.authorized(request.headers.get("authorization")):
            response = plain("authentication required", 401)
            response.headers["www-authenticate"] = 'Basic realm="stemrun", charset="UTF-8"'
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return Starlette(
        routes=board.routes(),
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard_requests)],
        exception_handlers={StemrunError: _store_error},
    )


async def _store_error(request: Request, exc: Exception) -> Response:
    # Bad input (unknown queue or state) and store failures alike: say so, keep serving.
    return plain(f"error: {exc}", 400 if isinstance(exc, UsageError) else 503)


def plain(message: str, status: int = 403) -> Response:
    """A plain-text refusal (never HTML: the message may echo input)."""
    return Response(message + "\n", status_code=status, media_type="text/plain")


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _page(text: str | None) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else 1


def _quote(task_id: str) -> str:
    return quote(task_id, safe="")


def _back(path: str, notice: str) -> Response:
    return RedirectResponse(f"{path}?{urlencode({'notice': notice})}", status_code=303)
