"""The shared query HTTP layer against a real local aiohttp server: retries, timeouts, errors,
sessions and what is logged (its pace, the buckets and the budget charges: test_http_pace.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from providers.base import HttpRequest
from providers.errors import QueryTransient
from providers.http import QueryHttp, RetryPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAST = RetryPolicy(attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)


class Hits:
    """What the server saw: one arrival time per request."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @property
    def count(self) -> int:
        return len(self.times)


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[TestServer, Hits]]:
    """Run `handler` on 127.0.0.1 at a free port, recording every arrival."""
    hits = Hits()

    async def recording(request: web.Request) -> web.StreamResponse:
        hits.times.append(time.monotonic())
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server, hits
    finally:
        await server.close()


def unavailable_twice() -> Handler:
    """A provider that answers 503 twice, then 200 `ok`."""
    answered = 0

    async def handler(_: web.Request) -> web.Response:
        nonlocal answered
        answered += 1
        return web.Response(status=503) if answered < 3 else web.Response(status=200, body=b"ok")

    return handler


def get(server: TestServer, path: str = "/q") -> HttpRequest:
    return HttpRequest("GET", str(server.make_url(path)), {"X-Secret": "s3cr3t"}, b"")


def test_retries_503_then_returns_success() -> None:
    """A 503 is retried and the first 200 after it is returned."""

    async def scenario() -> None:
        async with serve(unavailable_twice()) as (server, hits):
            http = QueryHttp(retry=RetryPolicy(attempts=4, backoff_base_s=0.01))
            reply = await http.for_account("a", 1000).send(get(server))
            await http.close()
        assert (reply.status, reply.body, hits.count) == (200, b"ok", 3)

    asyncio.run(scenario())


def test_gives_up_with_query_transient_after_bounded_attempts() -> None:
    """A provider that keeps answering 500 gets exactly `attempts` hits, then QueryTransient."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=500)

        async with serve(handler) as (server, hits):
            http = QueryHttp(retry=FAST)
            with pytest.raises(QueryTransient, match="http_500 after 3 attempts"):
                await http.for_account("a", 1000).send(get(server))
            await http.close()
        assert hits.count == 3

    asyncio.run(scenario())


def test_429_is_retried() -> None:
    """HTTP 429 counts as transient and is retried."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=429 if hits.count == 1 else 200)

        async with serve(handler) as (server, hits):
            http = QueryHttp(retry=FAST)
            reply = await http.for_account("a", 1000).send(get(server))
            await http.close()
        assert (reply.status, hits.count) == (200, 2)

    asyncio.run(scenario())


def test_404_is_returned_not_retried() -> None:
    """A 4xx other than 429 is the adapter's to interpret: returned once, never retried."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response({"code": "nope"}, status=404)

        async with serve(handler) as (server, hits):
            http = QueryHttp(retry=FAST)
            reply = await http.for_account("a", 1000).send(get(server))
            await http.close()
        assert (reply.status, hits.count) == (404, 1)
        assert reply.headers["content-type"].startswith("application/json")

    asyncio.run(scenario())


def test_post_body_and_headers_are_sent() -> None:
    """The request's method, headers and body reach the provider unchanged."""

    async def scenario() -> None:
        seen: dict[str, object] = {}

        async def handler(request: web.Request) -> web.Response:
            seen.update(method=request.method, sig=request.headers["X-Sig"])
            seen["body"] = await request.read()
            return web.Response(text="done")

        async with serve(handler) as (server, _):
            http = QueryHttp(retry=FAST)
            request = HttpRequest("POST", str(server.make_url("/p")), {"X-Sig": "abc"}, b"{}")
            reply = await http.for_account("a", 1000).send(request)
            await http.close()
        assert seen == {"method": "POST", "sig": "abc", "body": b"{}"}
        assert reply.body == b"done"

    asyncio.run(scenario())


def test_timeout_is_retried_then_query_transient() -> None:
    """A provider slower than the total timeout is retried, then reported as QueryTransient."""

    async def scenario() -> None:
        release = asyncio.Event()

        async def handler(_: web.Request) -> web.Response:
            await release.wait()
            return web.Response(status=200)

        async with serve(handler) as (server, hits):
            http = QueryHttp(total_timeout_s=0.15, retry=RetryPolicy(2, 0.01, 0.02))
            started = time.monotonic()
            with pytest.raises(QueryTransient, match="timeout after 2 attempts"):
                await http.for_account("a", 1000).send(get(server))
            elapsed = time.monotonic() - started
            release.set()
            await http.close()
        assert hits.count == 2
        assert elapsed < 1.5

    asyncio.run(scenario())


def test_connection_refused_is_transient() -> None:
    """Nobody listening is a transient failure, reported once attempts are spent."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=200)

        async with serve(handler) as (server, _):
            url = str(server.make_url("/q"))
        http = QueryHttp(retry=FAST)
        with pytest.raises(QueryTransient, match="after 3 attempts"):
            await http.for_account("a", 1000).send(HttpRequest("GET", url, {}, b""))
        await http.close()

    asyncio.run(scenario())


def test_close_closes_the_session() -> None:
    """close() closes the loop's session, and the next request opens a fresh one."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=200)

        async with serve(handler) as (server, _):
            http = QueryHttp(retry=FAST)
            session = http.session()
            assert http.session() is session
            await http.for_account("a", 1000).send(get(server))
            await http.close()
            assert session.closed
            await http.for_account("a", 1000).send(get(server))
            assert http.session() is not session
            await http.close()

    asyncio.run(scenario())


def test_each_event_loop_gets_its_own_session() -> None:
    """A QueryHttp reused across asyncio.run calls opens a session in each loop."""
    http = QueryHttp()

    async def open_and_close() -> bool:
        session = http.session()
        await http.close()
        return session.closed

    assert asyncio.run(open_and_close())
    assert asyncio.run(open_and_close())


def test_failures_are_logged_without_headers_or_body() -> None:
    """Each failed attempt logs method, host, path and reason, and never the headers."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=502)

        async with serve(handler) as (server, _):
            http = QueryHttp(retry=FAST)
            with pytest.raises(QueryTransient):
                await http.for_account("a", 1000).send(get(server, "/q?order=1"))
            await http.close()

    with capture_logs() as logs:
        asyncio.run(scenario())
    failures = [e for e in logs if e["event"] == "query_attempt_failed"]
    assert len(failures) == 3
    assert {e["reason"] for e in failures} == {"http_502"}
    assert failures[0]["path"] == "/q"
    assert "s3cr3t" not in repr(logs)
