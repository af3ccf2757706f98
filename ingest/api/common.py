"""What every /api handler shares: the bearer-token guard, database work off the loop, and
how a request's JSON body and ids are read and refused."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking database work off the event loop."""
    return await asyncio.to_thread(fn)


def db_session(request: web.Request) -> Session:
    from ingest.app import ENGINE

    return Session(request.app[ENGINE], expire_on_commit=False)


def authorized(handler: Handler) -> Handler:
    """`handler` behind the bearer token. Every /api route is added through this (`add_routes`),
    not through a middleware: an app with any middleware runs it, and aiohttp's own per-app
    middleware, on every request, and the callback route is the hot path (at saturation the
    middleware chain cost ~15 % of the ack rate)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        from ingest.app import SETTINGS

        token = request.app[SETTINGS].api_token
        if token is None:
            return web.json_response(
                {"error": "API disabled: PAYHOOK_API_TOKEN is not set"}, status=503
            )
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        # aiohttp keeps a header's bytes that are not UTF-8 as surrogates: encode them back, so a
        # near-miss is a 401 (not a 500 whose error log would carry the header).
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    return guarded


async def found(what: str, work: Callable[[], dict[str, Any] | None]) -> web.Response:
    """The JSON that `work` (run off the loop) finds, or a JSON 404 naming `what`."""
    body = await in_thread(work)
    if body is None:
        return web.json_response({"error": f"{what} not found"}, status=404)
    return web.json_response(body)


def bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def row_id(request: web.Request, what: str) -> int:
    """The route's `{id}`; an id no row can have (not a number, or beyond BIGINT) is the same
    JSON 404 as an id with no row."""
    try:
        value = int(request.match_info["id"])
    except ValueError:
        value = 0
    if not 0 < value < 2**63:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"{what} not found"}), content_type="application/json"
        )
    return value


async def json_body(request: web.Request, **loads: Any) -> Any:
    """The request's JSON body, read as UTF-8 whatever charset its Content-Type names (RFC
    8259); ValueError for a body that is not JSON."""
    try:
        return json.loads((await request.read()).decode("utf-8"), **loads)
    except RecursionError as exc:  # "[[[[…": a body can nest deeper than the parser recurses
        raise ValueError("JSON nested too deeply") from exc

