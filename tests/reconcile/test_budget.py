"""The Redis query budget: one per-account rate across every process."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import cast

import pytest
import redis

from providers.http import QueryHttp, RetryPolicy
from reconcile.breaker import Breaker
from reconcile.budget import RateBudget, window
from reconcile.due import DueOrder, claim_due
from reconcile.poll import Answer, query_all
from tests.reconcile.conftest import Recon


class FakeClock:
    """Wall-clock seconds, moved by hand."""

    def __init__(self, start: float) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(5.0, (1, 5)), (1.0, (1, 1)), (0.5, (2, 1)), (0.3, (4, 1)), (2.5, (1, 2))],
)
def test_window_for_rates(rate: float, expected: tuple[int, int]) -> None:
    """Rates of one a second or more count per second; slower ones per 1/rate seconds."""
    assert window(rate) == expected


def test_two_processes_share_one_budget(redis_client: redis.Redis, prefix: str) -> None:
    """Two budgets (two processes) on one Redis grant `rate` queries per second between them,
    and tell the refused one how long until the next second."""
    clock = FakeClock(1_000_000.25)
    first, second = RateBudget(redis_client, prefix, clock), RateBudget(redis_client, prefix, clock)
    grants = [b.try_take("mtpay/default", 3) for b in (first, second, first, second)]
    assert grants[:3] == [0.0, 0.0, 0.0]
    assert grants[3] == pytest.approx(0.75)
    clock.value += 1
    assert second.try_take("mtpay/default", 3) == 0.0
    assert first.try_take("other/default", 3) == 0.0


def test_pass_waits_when_another_process_spent_the_budget(recon: Recon) -> None:
    """With this second's budget already spent elsewhere, the pass's query waits for the next
    second instead of exceeding the account's rate."""
    recon.register("R1")
    recon.mtpay.set("R1", "PENDING")
    recon.clock.advance(seconds=901)
    recon.rate = 2.0
    budget = RateBudget(recon.redis, recon.prefix)
    while budget.try_take("mtpay/default", 2.0) == 0.0:
        pass
    spent_in = int(time.time())
    recon.pass_()
    assert recon.mtpay.count("R1") == 1
    assert time.time() >= spent_in + 1


def test_queries_of_one_pass_stay_within_the_rate(recon: Recon) -> None:
    """Six due orders at 3 queries a second take at least one extra second of wall time."""
    for n in range(6):
        recon.register(f"Q{n}")
        recon.mtpay.set(f"Q{n}", "PENDING")
    recon.clock.advance(seconds=901)
    recon.rate = 3.0
    started = time.monotonic()
    report = recon.pass_()
    assert recon.mtpay.count() == 6
    assert report["accounts"]["mtpay/default"]["queried"] == 6
    assert time.monotonic() - started >= 1.0


def test_a_take_that_would_come_too_late_is_refused_at_once(
    redis_client: redis.Redis, prefix: str
) -> None:
    """`acquire` with a deadline grants at once while the window has room, and answers False
    without sleeping when the next free window opens after the deadline."""
    clock = FakeClock(2_000_000.5)
    budget = RateBudget(redis_client, prefix, clock)
    assert asyncio.run(budget.acquire("opay/default", 1.0, until=clock.value + 0.1)) is True
    started = time.monotonic()
    assert asyncio.run(budget.acquire("opay/default", 1.0, until=clock.value + 0.4)) is False
    assert time.monotonic() - started < 0.4


def test_queries_waiting_for_a_slot_hold_no_budget_and_never_burst(recon: Recon) -> None:
    """Four processes poll one account while its provider holds every query for about two seconds:
    the queries waiting behind the held ones for a slot hold no unit of the shared budget, so
    when the provider answers again they do not all go out at once on units taken while they
    waited. Each budget window (a second of the wall clock) sees at most `rate` queries reach
    the provider, give or take one taken at a window's very end and arriving in the next."""
    rate, processes, per_process = 5, 4, 4
    recon.rate = float(rate)
    for n in range(processes * per_process):
        recon.register(f"B{n}")
        recon.mtpay.set(f"B{n}", "PENDING")
    recon.clock.advance(seconds=901)
    with recon.sessions.begin() as session:
        due = claim_due(session, recon.clock(), limit=100, lease_s=600)
    account = recon.account()

    async def one_process(orders: list[DueOrder]) -> list[Answer]:
        """One process's query round: its own slot, HTTP layer and token bucket."""
        http = QueryHttp(retry=RetryPolicy(attempts=1))
        ctx = replace(recon.ctx(concurrency=1), http=http)
        try:
            return await query_all(ctx, [(account, o) for o in orders],
                                   Breaker(recon.redis, recon.prefix),
                                   RateBudget(recon.redis, recon.prefix))
        finally:
            await http.close()

    async def all_processes() -> list[list[Answer]]:
        return await asyncio.gather(*(one_process(due[i::processes]) for i in range(processes)))

    # Released mid-window, not at a random point of one: the held queries' successors take
    # their units together, and taken in a window's last milliseconds they arrived in the next
    # with its own, up to `rate + processes` of them (a flake, not a burst of the budget's).
    recon.mtpay.held_until = math.floor(time.time()) + 2.5
    answers = [a for round_ in recon.run(all_processes()) for a in round_]
    assert [a.error for a in answers] == [None] * processes * per_process
    per_window = Counter(int(t) for t in recon.mtpay.arrivals)
    assert sum(per_window.values()) == processes * per_process
    assert max(per_window.values()) <= rate + 1, sorted(per_window.items())


def _retry_finds_the_budget_spent(recon: Recon) -> None:
    """Two due orders of a 1/s account; the first query is answered 503, and as it arrives the
    budget's current and next windows are spent elsewhere. Each query's retry may wait for a
    unit 0.05 s (`backoff_max_s`); this process's pace lets each query and retry out at once."""
    recon.rate = 1.0
    recon.http = QueryHttp(retry=RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.05),
                           burst=3)
    for number in ("RC1", "RC2"):
        recon.register(number)
        recon.mtpay.set(number, "SUCCESS")
    recon.clock.advance(seconds=901)
    budget, state = RateBudget(recon.redis, recon.prefix), recon.mtpay
    length, allowed = window(recon.rate)
    state.unavailable = True  # to the first query only

    def first_query_spends_the_next_windows() -> None:
        if len(state.queries) > 1:
            state.unavailable = False
            return
        now = int(time.time() // length)
        for slot in (now, now + 1):
            recon.redis.set(budget.key("mtpay/default", slot), allowed, ex=30)

    state.on_query = first_query_spends_the_next_windows


def test_a_retry_without_budget_in_time_fails_its_query_and_frees_its_slot(recon: Recon) -> None:
    """A query whose retry can get no unit of the budget within the transport's longest backoff
    fails transient for this pass, its order still due and not counted an attempt, and gives
    its one slot back: the pass's other order is queried. The retry's charge had no deadline:
    it held the slot, and the pass, until a window had room, a whole window of a low rate's."""
    _retry_finds_the_budget_spent(recon)
    report = recon.pass_(concurrency=1)
    assert sorted(recon.mtpay.queries) == ["RC1", "RC2"]  # the first one's retry never went out
    first, second = recon.mtpay.queries
    assert report["accounts"]["mtpay/default"]["errors"] == {"transient": 1}
    assert [o["order"] for o in report["resolved_by_poll"]["orders"]] == [f"mtpay/default/{second}"]
    failed = recon.order(first)
    assert (failed.status, failed.poll_attempts) == ("pending", 0)
    assert failed.next_poll_at == recon.clock() + timedelta(seconds=recon.config.claim_lease_s)


def test_a_retry_refused_its_budget_is_told_apart_from_the_providers_failure(
    recon: Recon,
) -> None:
    """The query whose retry the budget refused answers transient with the code `query:budget`,
    not the provider's last failure (`http_503`), which a retry might have cured."""
    _retry_finds_the_budget_spent(recon)
    with recon.sessions.begin() as session:
        due = claim_due(session, recon.clock(), limit=10, lease_s=600)
    answers = recon.run(query_all(recon.ctx(concurrency=1), [(recon.account(), o) for o in due],
                                  Breaker(recon.redis, recon.prefix),
                                  RateBudget(recon.redis, recon.prefix)))
    first = recon.mtpay.queries[0]
    assert sorted((a.order.merchant_order_no == first, a.error, a.code) for a in answers) == [
        (False, None, ""), (True, "transient", "query:budget")]


def test_a_retry_whose_turn_in_the_pace_is_far_off_fails_its_query_in_time(recon: Recon) -> None:
    """A retry waits for its turn in this process's pace no longer than for its unit of the
    budget (`backoff_max_s`): with the account's bucket spent 10 s ahead (queries of the account
    queued in the process) as the first query is answered 503, the query fails transient
    (`query:budget`) at once, its retry neither sent nor charged, where the retry waited the
    10 s out in its slot. The budget had a unit for it: only the pace refused it."""
    recon.rate = 2.0
    recon.http = QueryHttp(retry=RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.05))
    recon.register("RT1")
    recon.clock.advance(seconds=901)
    pace, budget = recon.http.bucket("mtpay/default", recon.rate), RateBudget(recon.redis,
                                                                             recon.prefix)
    recon.mtpay.unavailable = True

    def queries_queue_up_in_the_process() -> None:
        for _ in range(20):
            pace.reserve()

    recon.mtpay.on_query = queries_queue_up_in_the_process
    with recon.sessions.begin() as session:
        due = claim_due(session, recon.clock(), limit=10, lease_s=600)
    started = time.monotonic()
    (answer,) = recon.run(query_all(recon.ctx(), [(recon.account(), o) for o in due],
                                    Breaker(recon.redis, recon.prefix), budget))
    assert time.monotonic() - started < 1.0
    assert (answer.error, answer.code) == ("transient", "query:budget")
    assert recon.mtpay.count("RT1") == 1
    keys = list(recon.redis.scan_iter(budget.key("mtpay/default", 0)[:-1] + "*"))
    assert sum(int(v) for v in cast("list[bytes]", recon.redis.mget(keys))) == 1  # the first's
