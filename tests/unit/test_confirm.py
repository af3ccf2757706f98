"""Confirming a callback by query in a worker: what a failure of the shared query budget's
Redis during the query is taken for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from structlog.testing import capture_logs

from ledger.db import make_engine, make_sessionmaker
from ledger.status import Status
from payhook.accounts import Account, Accounts
from payhook.settings import Settings
from providers import registry
from providers.base import ProviderEvent, Trust
from providers.http import QueryHttp, RetryPolicy
from providers.mtpay import MTPayAccount
from reconcile.budget import RateBudget
from tests.conftest import queue_name
from tests.reconcile.harness import (
    ACCESS_KEY,
    SECRET_KEY,
    Clock,
    MTPayState,
    ThreadServer,
    create_mtpay_app,
)
from workers.judging import Verdict, confirm
from workers.runtime import Runtime


@pytest.fixture
def mtpay() -> Iterator[tuple[MTPayState, str]]:
    """MTPay's query API stand-in, and its URL."""
    state = MTPayState(Clock(datetime.now(UTC)))
    server = ThreadServer(create_mtpay_app(state))
    yield state, server.start()
    server.stop()


@pytest.fixture
def runtime(
    database_url: str, redis_url: str, mtpay: tuple[MTPayState, str]
) -> Iterator[Runtime]:
    """A worker's runtime with one MTPay account (confirm_by_query) on the stand-in; its
    queries are retried once."""
    config = MTPayAccount.model_validate(
        {"base_url": mtpay[1], "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    )
    account = Account(registry.get("mtpay"), "default", config)
    settings = Settings(database_url=database_url, redis_url=redis_url,
                        queue=queue_name("confirm"))
    engine = make_engine(database_url)
    rt = Runtime(settings=settings, accounts=Accounts({("mtpay", "default"): account}),
                 engine=engine, sessions=make_sessionmaker(engine),
                 redis=redis.Redis.from_url(redis_url),
                 http=QueryHttp(retry=RetryPolicy(attempts=2, backoff_base_s=0.01)))
    yield rt
    rt.close()


def test_a_budget_redis_error_charging_a_retry_is_logged_as_redis_not_as_an_adapter_bug(
    runtime: Runtime, mtpay: tuple[MTPayState, str],
) -> None:
    """A Redis error while a confirming query's retry is charged to the budget (here the
    budget's keys turn into lists once the query is sent) still ends the callback's attempt
    transient, counted, but is logged and recorded as the budget's Redis failing: it was
    logged `query_adapter_error`, with a traceback, and recorded as the error's class alone."""
    state, _url = mtpay
    state.unavailable = True
    budget = RateBudget(runtime.redis, runtime.recon_prefix)

    def budget_keys_become_lists() -> None:
        now = int(time.time())
        for slot in range(now - 1, now + 30):
            runtime.redis.delete(budget.key("mtpay/default", slot))
            runtime.redis.rpush(budget.key("mtpay/default", slot), "not a count")

    state.on_query = budget_keys_become_lists
    account = runtime.accounts.get("mtpay", "default")
    claimed = ProviderEvent("CF1", "e1", "SUCCESS", Status.SUCCEEDED, Decimal("100.00"), "CNY",
                            trust=Trust.CONFIRM_BY_QUERY)
    verdict = Verdict(callback_id=1, attempts=1, account=account, claimed=claimed)
    with capture_logs() as logs:
        confirm(runtime, [verdict])
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == [
        "query_attempt_failed", "query_budget_unavailable"]
    (failed,) = [e for e in logs if e["event"] == "query_budget_unavailable"]
    assert (failed["error"], failed["charging"]) == ("ResponseError", "retry")
    assert (verdict.transient, verdict.deferred) == ("query:redis:ResponseError", False)
    assert state.count("CF1") == 1
