"""The shared query HTTP layer against a real local aiohttp server: retry, timeout, rate limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from providers.base import HttpRequest
from providers.errors import QueryTransient
from providers.http import QueryHttp, RetryPolicy, TokenBucket
from reconcile.budget import RateBudget
from tests.conftest import queue_name

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


def test_rate_limit_spaces_requests() -> None:
    """N concurrent requests at rate r through one account arrive over at least (N-burst)/r s."""

    async def scenario() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=200)

        async with serve(handler) as (server, hits):
            http = QueryHttp(retry=FAST, burst=2)
            rate, n = 10.0, 10
            first, second = http.for_account("acct", rate), http.for_account("acct", rate)
            await asyncio.gather(*(t.send(get(server)) for t in [first, second] * (n // 2)))
            await http.close()
        span = max(hits.times) - min(hits.times)
        assert hits.count == n
        assert span >= (n - 2) / rate * 0.9
        assert span < 2.0

    asyncio.run(scenario())


def test_other_accounts_are_not_throttled() -> None:
    """Distinct keys get distinct buckets; the same key gets the same bucket."""
    http = QueryHttp()
    assert http.bucket("a", 1.0) is http.bucket("a", 5.0)
    assert http.bucket("a", 1.0) is not http.bucket("b", 1.0)


def test_token_bucket_waits_instead_of_spinning() -> None:
    """An empty bucket hands out a delay of 1/rate per queued caller rather than a token."""
    bucket = TokenBucket(rate_per_s=4.0, burst=1)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.25, abs=0.02)
    assert bucket.reserve() == pytest.approx(0.5, abs=0.02)


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


def test_each_retry_is_charged_to_the_shared_query_budget(redis_url: str) -> None:
    """A retry is one more query to the provider: it takes its unit of the account's budget
    every process shares (the caller took the first attempt's), so a provider failing under
    load is not sent up to `attempts` times its rate by the retries. Without a unit to be had,
    the query ends transient rather than retrying past the budget."""
    client = redis.Redis.from_url(redis_url)
    budget = RateBudget(client, queue_name("http-budget"))

    def used() -> int:
        keys = list(client.scan_iter(budget.key("acct", 0)[:-1] + "*"))
        return sum(int(v) for v in client.mget(keys)) if keys else 0

    async def scenario() -> None:
        async with serve(unavailable_twice()) as (server, hits):
            http = QueryHttp(retry=FAST)
            charged = http.for_account("acct", 1000, lambda: budget.acquire("acct", 1000))
            reply = await charged.send(get(server))
            assert (reply.status, hits.count, used()) == (200, 3, 2)

        async with serve(unavailable_twice()) as (server, hits):
            assert budget.try_take("full", 0.001) == 0.0  # its one unit in 1000 s: taken
            refused = http.for_account("full", 1000, lambda: budget.acquire("full", 0.001,
                                                                            until=0))
            with pytest.raises(QueryTransient, match="no query budget for a retry"):
                await refused.send(get(server))
            assert hits.count == 1
        await http.close()

    try:
        asyncio.run(scenario())
    finally:
        client.close()


def test_a_retry_is_charged_after_its_turn_in_the_bucket() -> None:
    """A retry waits its turn in the account's token bucket first and only then takes its unit
    of the shared budget, right before it goes out (a unit taken before that wait could be
    spent in a later window than it was taken in); a first attempt the caller `paced` goes out
    without waiting in the bucket again."""
    events: list[str] = []

    class RecordingBucket(TokenBucket):
        async def acquire(self) -> None:
            events.append("bucket")
            await super().acquire()

    async def charge() -> bool:
        events.append("charge")
        return True

    async def scenario() -> None:
        answer = unavailable_twice()

        async def handler(request: web.Request) -> web.StreamResponse:
            events.append("sent")
            return await answer(request)

        async with serve(handler) as (server, _):
            http = QueryHttp(retry=FAST)
            reply = await http.send(get(server), RecordingBucket(1000), charge, paced=True)
            await http.close()
        assert reply.status == 200

    asyncio.run(scenario())
    assert events == ["sent", "bucket", "charge", "sent", "bucket", "charge", "sent"]
