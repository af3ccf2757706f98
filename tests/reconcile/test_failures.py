"""What a pass does when a query fails: the provider's reason is kept for the report, and one
order's or account's failure is its own, never the pass's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from ledger.orders import OrderSpec, register_order
from ledger.status import Kind
from payhook.accounts import Accounts
from payhook.embedded import EmbeddedRedis
from providers.http import QueryHttp, RetryPolicy
from reconcile.breaker import Breaker, BreakerState
from reconcile.budget import RateBudget
from reconcile.due import DueOrder, claim_due
from reconcile.poll import query_all
from reconcile.runner import run_pass
from reconcile.sms import SmsConfig
from tests.lost_redis import SlowlyRefused, dead_redis
from tests.reconcile.conftest import T0, Recon

T = TypeVar("T")


def test_a_permanent_query_error_reports_the_providers_code_made_printable(
    recon: Recon,
) -> None:
    """A provider error that retrying will not cure is reported with the provider's own code
    (not the exception's class), only visible ASCII of it and bounded, whatever the provider
    sent."""
    recon.register("PE1")
    recon.mtpay.fail_with = "ORDER_LOCKED\x00\u00e9 " + "X" * 100
    recon.clock.advance(seconds=901)
    report = recon.pass_()
    assert report["state"] == "done"
    (error,) = report["errors"]["orders"]
    assert error["error"] == "permanent"
    assert error["code"] == "ORDER_LOCKED???" + "X" * 33
    assert recon.order("PE1").poll_attempts == 1


def test_a_budget_redis_out_of_reach_fails_each_order_not_the_query_round(recon: Recon) -> None:
    """With the query budget's Redis unreachable, every order's answer is its own transient
    failure (asked again after its lease, no attempt counted, the provider's breaker left
    alone), nothing is asked, and no query is left running on the loop."""
    for n in range(3):
        recon.register(f"RB{n}")
        recon.mtpay.set(f"RB{n}", "SUCCESS")
    recon.clock.advance(seconds=901)
    ctx, account = recon.ctx(), recon.account()
    with recon.sessions.begin() as session:
        due = claim_due(session, recon.clock(), limit=10, lease_s=600)
    work = [(account, order) for order in due]
    breaker = Breaker(recon.redis, recon.prefix, failures=1)
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))  # refused at once
    try:
        answers = recon.run(query_all(ctx, work, breaker, RateBudget(dead, recon.prefix)))
    finally:
        dead.close()
    assert [(a.order.merchant_order_no, a.error, a.code) for a in answers] == [
        (f"RB{n}", "transient", "redis:ConnectionError") for n in range(3)]
    assert recon.mtpay.count() == 0
    assert breaker.state(account.key) is BreakerState.CLOSED
    assert asyncio.all_tasks(recon.loop) == set()


def test_one_accounts_redis_failure_is_that_accounts_not_the_passs(recon: Recon) -> None:
    """A Redis error about one account (here its breaker's key holds a list) leaves that
    account's orders unclaimed and due, reported as its `redis` error, while the pass goes on
    to resolve the other account's orders and ends `done`."""
    recon.register("OK1")
    recon.mtpay.set("OK1", "SUCCESS")
    spec = OrderSpec("mtpay", "second", "RX1", Kind.PAYMENT, 10000, "CNY",
                     next_poll_at=recon.clock() + timedelta(seconds=900))
    with recon.sessions.begin() as session:
        register_order(session, spec, recon.clock())
    recon.redis.rpush(f"{recon.prefix}:breaker:mtpay/second:fails", "not a count")
    recon.clock.advance(seconds=901)
    ctx = recon.ctx()
    second = replace(recon.account(), name="second")
    ctx.accounts = Accounts({**ctx.accounts.by_key, ("mtpay", "second"): second})
    report = recon.report(run_pass(ctx))
    assert report["state"] == "done"
    assert recon.order("OK1").status == "succeeded"
    stats = report["accounts"]["mtpay/second"]
    assert (stats["claimed"], stats["errors"], stats["breaker"]) == (0, {"redis": 1}, "unknown")
    assert report["accounts"]["mtpay/default"]["breaker"] == "closed"
    order = recon.order("RX1")
    assert (order.status, order.next_poll_at) == ("pending", spec.next_poll_at)
    assert recon.mtpay.count("RX1") == 0


def _due(number: str, account: str = "default") -> DueOrder:
    """A claimed order as the query round sees it (the round reads no database)."""
    return DueOrder(int(number[2:]), "mtpay", account, number, None, Kind.PAYMENT.value, 10000,
                    "CNY", T0, 0)


# SMS set up on a closed port: with Redis out of reach, no SMS call is made (each needs Redis
# first), so none is waited for.
_SMS_NEVER_REACHED = SmsConfig.model_validate(
    {"base_url": "http://127.0.0.1:1", "username": "u", "password": "p", "api_key": "k",
     "api_secret": "s", "account_code": "APP", "low_credit": "10",
     "alert_numbers": ["601111330000"]})


def test_a_pass_finds_redis_out_of_reach_once_not_once_per_call(recon: Recon) -> None:
    """With Redis out of reach, a pass over three silent accounts with SMS alerts set up tries
    to reach it once: the silence claims, the breakers (for the claim and the report), the
    alerts and the credit check after the first fail at once, each with its outcome of today
    (account skipped with its `redis` error, alert failed, credit check failed), and one line
    says the pass found Redis down."""
    names = ("default", "second", "third")
    for name in names:
        spec = OrderSpec("mtpay", name, f"RP-{name}", Kind.PAYMENT, 10000, "CNY",
                         next_poll_at=recon.clock() + timedelta(seconds=900))
        with recon.sessions.begin() as session:
            register_order(session, spec, recon.clock())
    recon.clock.advance(seconds=901)  # due, and silent: no callback ever
    recon.sms = _SMS_NEVER_REACHED
    ctx = recon.ctx()
    accounts = {("mtpay", n): replace(recon.account(), name=n) for n in names}
    dead, per_call = dead_redis()
    try:
        with capture_logs() as logs:
            report = recon.report(run_pass(replace(ctx, redis=dead, alerter=None,
                                                   accounts=Accounts(accounts, sms=recon.sms))))
    finally:
        dead.close()
    assert SlowlyRefused.refusals == per_call
    assert report["state"] == "done"
    assert {key: (s["claimed"], s["errors"], s["breaker"])
            for key, s in report["accounts"].items()} == {
        f"mtpay/{n}": (0, {"redis": 1}, "unknown") for n in names}
    assert [s["brought_forward"] for s in report["silence"]] == [0, 0, 0]
    assert (report["alerts"]["failed"], report["alerts"]["sent"]) == (3, [])
    assert report["sms_credit"] == {"error": "ConnectionError"}
    assert [e["error"] for e in logs if e["event"] == "reconcile_redis_down"] == [
        "ConnectionError"]
    assert recon.mtpay.count() == 0


def test_redis_lost_in_the_query_round_is_not_sought_again_by_the_rest_of_the_pass(
    recon: Recon, tmp_path: Path
) -> None:
    """The query round shares the pass's Redis calls: Redis lost once the orders are claimed
    (its server stopped) is found by the round's first call, and the rest of the pass (the
    breaker for the report, the credit check) tries it no more, each failing as before."""
    dead, per_call = dead_redis()  # what one call to a closed port costs
    dead.close()
    server = EmbeddedRedis(tmp_path)
    pool = redis.ConnectionPool.from_url(server.start(), connection_class=SlowlyRefused,
                                         retry=Retry(NoBackoff(), 0))
    for n in range(3):
        recon.register(f"RL{n}")
    recon.clock.advance(seconds=901)
    recon.sms = _SMS_NEVER_REACHED
    ctx = replace(recon.ctx(silence_window_s=86400), redis=redis.Redis(connection_pool=pool),
                  alerter=None)

    def stop_then_run(coro: Coroutine[Any, Any, T], /) -> T:
        if server.process is not None:  # the first coroutine run is the query round
            server.stop()
            pool.disconnect()
            SlowlyRefused.refusals = 0
        return recon.run(coro)

    try:
        with capture_logs() as logs:
            report = recon.report(run_pass(replace(ctx, run=stop_then_run)))
    finally:
        server.stop()
        pool.disconnect()
    assert SlowlyRefused.refusals == per_call
    stats = report["accounts"]["mtpay/default"]
    assert (stats["claimed"], stats["errors"], stats["breaker"]) == (
        3, {"transient": 3}, "unknown")
    assert report["sms_credit"] == {"error": "ConnectionError"}
    assert [e["event"] for e in logs if e["event"] in (
        "breaker_unavailable", "sms_credit_check_failed", "reconcile_redis_down")] == [
        "sms_credit_check_failed", "reconcile_redis_down"]
    assert recon.mtpay.count() == 0


def test_redis_out_of_reach_is_found_once_per_round_not_once_per_order(recon: Recon) -> None:
    """Once a Redis call of the round has failed to reach Redis, every order not yet asked
    fails transient at once, without calling Redis (each call pays the client's retries,
    seconds, so a round of a hundred orders took minutes): the round makes its Redis calls one
    at a time, so one call of twenty orders' reaches Redis. One summary line names the outage."""
    dead, per_call = dead_redis()
    work = [(recon.account(), _due(f"RD{n}")) for n in range(20)]
    try:
        with capture_logs() as logs:
            answers = recon.run(query_all(recon.ctx(), work, Breaker(dead, recon.prefix),
                                          RateBudget(dead, recon.prefix)))
    finally:
        dead.close()
    assert [(a.error, a.code) for a in answers] == [("transient", "redis:ConnectionError")] * 20
    assert SlowlyRefused.refusals == per_call
    assert [(e["event"], e.get("orders_cut")) for e in logs if "redis" in e["event"]] == [
        ("poll_redis_failed", None), ("poll_redis_down", 19)]
    assert recon.mtpay.count() == 0


def test_a_redis_error_about_one_key_fails_that_account_not_the_round(recon: Recon) -> None:
    """An error about one key (here an account's breaker key holds a list) is that account's
    orders' transient failure; it does not cut the round's Redis calls, and the other
    account's orders, asked after them, are answered."""
    recon.redis.rpush(f"{recon.prefix}:breaker:mtpay/second:fails", "not a count")
    second = replace(recon.account(), name="second")
    work = [(second, _due(f"RW{n}", "second")) for n in range(3)]
    for n in range(3, 6):
        recon.mtpay.set(f"RW{n}", "SUCCESS")
        work.append((recon.account(), _due(f"RW{n}")))
    answers = recon.run(query_all(recon.ctx(concurrency=1), work,
                                  Breaker(recon.redis, recon.prefix),
                                  RateBudget(recon.redis, recon.prefix)))
    assert [(a.error, a.code) for a in answers] == [("transient", "redis:ResponseError")] * 3 + [
        (None, "")] * 3
    assert recon.mtpay.count() == 3


def test_a_redis_error_charging_a_retry_is_a_redis_failure_not_the_providers(
    recon: Recon,
) -> None:
    """A Redis error while a retry is charged to the budget (here the budget's keys turn into
    lists once the query is sent) ends the order transient as Redis's failure, where it was
    taken for an adapter bug: a `permanent` answer, counted as an attempt."""
    recon.mtpay.unavailable = True

    def budget_keys_become_lists() -> None:
        now = int(time.time())
        for slot in range(now - 1, now + 30):
            key = RateBudget(recon.redis, recon.prefix).key("mtpay/default", slot)
            recon.redis.delete(key)
            recon.redis.rpush(key, "not a count")

    recon.mtpay.on_query = budget_keys_become_lists
    recon.http = QueryHttp(retry=RetryPolicy(attempts=2, backoff_base_s=0.01))
    work = [(recon.account(), _due("RR1"))]
    (answer,) = recon.run(query_all(recon.ctx(), work, Breaker(recon.redis, recon.prefix),
                                    RateBudget(recon.redis, recon.prefix)))
    assert (answer.error, answer.code) == ("transient", "redis:ResponseError")
    assert recon.mtpay.count("RR1") == 1
