"""The shared query HTTP layer's pace: each account's token bucket, and each retry's charge to
the query budget every process shares, against a real local aiohttp server and Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from aiohttp import web

from providers.errors import QueryRefused
from providers.http import QueryHttp, TokenBucket
from reconcile.budget import BudgetCharge, RateBudget
from tests.conftest import queue_name
from tests.providers.test_http import FAST, get, serve, unavailable_twice


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


def test_a_turn_due_too_late_is_refused_at_once_and_takes_no_token() -> None:
    """`acquire_within` takes a token due within its bound (waiting for it), and refuses one due
    later at once, leaving the bucket as it was; a token refunded is there for the next caller."""
    bucket = TokenBucket(rate_per_s=4.0, burst=1)

    async def turns() -> list[bool]:
        return [await bucket.acquire_within(0.0), await bucket.acquire_within(0.1),
                await bucket.acquire_within(0.1), await bucket.acquire_within(0.3)]

    assert asyncio.run(turns()) == [True, False, False, True]
    assert bucket.reserve() == pytest.approx(0.25, abs=0.05)  # one queued caller: no more
    for _ in range(3):
        bucket.refund()
    assert bucket.reserve() == 0.0  # refunds fill the bucket up to `burst`, never past it
    assert bucket.reserve() == pytest.approx(0.25, abs=0.05)


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
            charge = BudgetCharge(budget, "acct", 1000, lambda: budget.now() + 1)
            charged = http.for_account("acct", 1000, charge)
            reply = await charged.send(get(server))
            assert (reply.status, hits.count, used()) == (200, 3, 2)

        async with serve(unavailable_twice()) as (server, hits):
            assert budget.try_take("full", 0.001) == 0.0  # its one unit in 1000 s: taken
            charge = BudgetCharge(budget, "full", 0.001, lambda: budget.now() + 1)
            refused = http.for_account("full", 1000, charge)
            with pytest.raises(QueryRefused, match="no query budget for a retry") as caught:
                await refused.send(get(server))
            assert (hits.count, caught.value.code) == (1, "http_503")
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
        async def acquire_within(self, max_wait_s: float) -> bool:
            events.append("bucket")
            return await super().acquire_within(max_wait_s)

    class Charge:
        def bound_s(self) -> float:
            return 1.0

        async def __call__(self, within_s: float) -> bool:
            events.append("charge")
            return True

    async def scenario() -> None:
        answer = unavailable_twice()

        async def handler(request: web.Request) -> web.StreamResponse:
            events.append("sent")
            return await answer(request)

        async with serve(handler) as (server, _):
            http = QueryHttp(retry=FAST)
            reply = await http.send(get(server), RecordingBucket(1000), Charge(), paced=True)
            await http.close()
        assert reply.status == 200

    asyncio.run(scenario())
    assert events == ["sent", "bucket", "charge", "sent", "bucket", "charge", "sent"]


def test_a_retry_waits_for_its_turn_in_the_pace_no_longer_than_its_charge_allows() -> None:
    """A retry's turn in the account's bucket is waited for within the charge's bound, like its
    unit of the budget: with the bucket of a 1/s account spent 10 s ahead (queries of the account
    queued in the process) and the provider answering 503, the query ends refused at once, the
    retry neither sent nor charged and its turn left to the others."""
    charged: list[float] = []

    class Charge:
        def bound_s(self) -> float:
            return 0.5

        async def __call__(self, within_s: float) -> bool:
            charged.append(within_s)
            return True

    async def answer_503(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async def scenario() -> None:
        async with serve(answer_503) as (server, hits):
            http = QueryHttp(retry=FAST)
            pace = http.bucket("acct", 1.0)
            for _ in range(10):
                pace.reserve()
            started = time.monotonic()
            with pytest.raises(QueryRefused, match="after 1 attempts"):
                await http.send(get(server), pace, Charge(), paced=True)
            assert time.monotonic() - started < 0.5
            assert (hits.count, charged) == (1, [])
            assert pace.reserve() == pytest.approx(10.0, abs=0.2)  # no turn taken by the retry
            await http.close()

    asyncio.run(scenario())
