"""Confirming a callback by query in a worker: what a failure of the shared query budget's
Redis is taken for, and when a query takes its unit of the budget."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from ledger.status import Status
from payhook.accounts import Account, Accounts
from providers import registry
from providers.base import ProviderEvent, Trust
from providers.http import QueryHttp, RetryPolicy, TokenBucket
from providers.mtpay import MTPayAccount
from reconcile.budget import RateBudget
from tests.lost_redis import SlowlyRefused, dead_redis
from tests.reconcile.harness import (
    ACCESS_KEY,
    SECRET_KEY,
    MTPayState,
)
from tests.unit.mtpay_worker import mtpay_runtime, mtpay_server
from workers.judging import DEFERRED, Verdict, confirm
from workers.runtime import Runtime


@pytest.fixture
def mtpay() -> Iterator[tuple[MTPayState, str]]:
    """MTPay's query API stand-in, and its URL."""
    with mtpay_server() as server:
        yield server


@pytest.fixture
def runtime(
    database_url: str, redis_url: str, mtpay: tuple[MTPayState, str]
) -> Iterator[Runtime]:
    """A worker's runtime with one MTPay account (confirm_by_query) on the stand-in; its
    queries are retried once."""
    retry = RetryPolicy(attempts=2, backoff_base_s=0.01)
    with mtpay_runtime(database_url, redis_url, mtpay[1], retry) as rt:
        yield rt


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


def _claims(runtime: Runtime, count: int) -> list[Verdict]:
    """`count` callbacks to confirm, each claiming its own order."""
    account = runtime.accounts.get("mtpay", "default")
    return [
        Verdict(callback_id=n, attempts=1, account=account,
                claimed=ProviderEvent(f"CF{n}", f"e{n}", "SUCCESS", Status.SUCCEEDED,
                                      Decimal("100.00"), "CNY", trust=Trust.CONFIRM_BY_QUERY))
        for n in range(count)
    ]


def _account_at(runtime: Runtime, url: str, rate: float) -> Account:
    """The runtime's MTPay account on the stand-in at `url`, at `rate` queries a second."""
    account = Account(registry.get("mtpay"), "default", MTPayAccount.model_validate(
        {"base_url": url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
         "query_rate_per_s": rate}))
    runtime.accounts = Accounts({("mtpay", "default"): account})
    return account


def test_redis_out_of_reach_is_found_once_per_batch_not_once_per_query(
    runtime: Runtime, mtpay: tuple[MTPayState, str],
) -> None:
    """With the budget's Redis out of reach, one call of a batch of forty distinct orders tries
    to reach it, and every callback is deferred, its attempt not counted, in one log line: each
    query paid the client's retries (seconds) on its own, so a batch held its worker for many
    times that."""
    runtime.redis.close()
    runtime.redis, per_call = dead_redis()
    _account_at(runtime, mtpay[1], 1000)
    verdicts = _claims(runtime, 40)
    with capture_logs() as logs:
        confirm(runtime, verdicts)
    assert SlowlyRefused.refusals == per_call
    assert {(v.transient, v.deferred, v.counted) for v in verdicts} == {(DEFERRED, True, 0)}
    assert [(e["event"], e.get("deferred")) for e in logs if e["log_level"] != "debug"] == [
        ("confirm_redis_down", 40), ("confirm_deferred", None)]
    assert mtpay[0].count() == 0


def test_redis_lost_while_retries_are_charged_is_found_once_per_batch(
    runtime: Runtime, mtpay: tuple[MTPayState, str],
) -> None:
    """Redis lost as the batch's first query reaches the provider (which answers 503): the
    retries' charges go through the batch's Redis calls too, so one call tries to reach it and
    cuts every other. Each callback is then transient as Redis's failure (asked, so counted) or
    deferred (not yet asked), told in one line."""
    gone = False

    class Losing(SlowlyRefused):
        """A real connection to the test's Redis that, once it is `gone`, connects to a port
        where nobody listens (refused, slowly)."""

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if gone and self.port != 1:
                self.disconnect()  # type: ignore[no-untyped-call]
                self.port = 1
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def lost() -> None:
        nonlocal gone
        gone = True

    state, url = mtpay
    state.unavailable, state.on_query = True, lost
    _account_at(runtime, url, 1000)
    runtime.redis.close()
    _dead, per_call = dead_redis()
    _dead.close()
    runtime.redis = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        runtime.settings.redis_url, connection_class=Losing, retry=Retry(NoBackoff(), 0)))
    verdicts = _claims(runtime, 10)
    with capture_logs() as logs:
        confirm(runtime, verdicts)
    assert SlowlyRefused.refusals == per_call
    asked = [v for v in verdicts if not v.deferred]
    assert asked
    assert {(v.transient, v.counted) for v in asked} == {("query:redis:ConnectionError", 1)}
    assert {(v.transient, v.counted) for v in verdicts if v.deferred} <= {(DEFERRED, 0)}
    (down,) = [e for e in logs if e["event"] == "confirm_redis_down"]
    assert (down["retries_failed"], down["deferred"]) == (len(asked), 10 - len(asked))
    assert state.count() == len(asked)


def test_a_confirming_query_takes_its_budget_unit_after_its_turn_in_the_bucket(
    runtime: Runtime, mtpay: tuple[MTPayState, str],
) -> None:
    """A confirming query waits its turn in this process's token bucket first and takes its
    unit of the shared budget (a Redis INCR) only then, right before it is sent: a unit taken
    before that wait could be spent in a later window, with other waiters', in a burst."""
    events: list[str] = []

    class RecordingBucket(TokenBucket):
        async def acquire(self) -> None:
            events.append("bucket")
            await super().acquire()

        async def acquire_within(self, max_wait_s: float) -> bool:
            events.append("bucket")
            return await super().acquire_within(max_wait_s)

    class RecordingHttp(QueryHttp):
        def bucket(self, key: str, rate_per_s: float) -> TokenBucket:
            return self._recording

        _recording = RecordingBucket(1000)

    class Recording(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            packed = command if isinstance(command, list) else [command]
            if any(b"\r\nINCRBY\r\n" in bytes(part) for part in packed):  # the budget's take
                events.append("take")
            super().send_packed_command(command, check_health)

    state, _url = mtpay
    state.set("CF0", "SUCCESS")
    state.on_query = lambda: events.append("sent")
    runtime.http = RecordingHttp(retry=RetryPolicy(attempts=1))
    runtime.redis.close()
    runtime.redis = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        runtime.settings.redis_url, connection_class=Recording))
    (verdict,) = _claims(runtime, 1)
    confirm(runtime, [verdict])
    assert (verdict.transient, [e.status for e in verdict.events]) == (None, [Status.SUCCEEDED])
    assert events == ["bucket", "take", "sent"]


def test_a_retry_whose_turn_in_the_pace_is_past_the_deadline_fails_its_query_at_once(
    runtime: Runtime, mtpay: tuple[MTPayState, str],
) -> None:
    """A confirming query's retry waits for its turn in this process's pace no later than the
    batch's deadline, as for its unit of the budget: with the account's bucket spent 10 s ahead
    (queries of the account queued in the process) as the first query is answered 503, the
    callback is transient at once, its attempt counted, where the retry waited the 10 s out,
    holding the batch and its worker far past `confirm_wait_s` (2 s)."""
    state, url = mtpay
    _account_at(runtime, url, 2.0)
    pace = runtime.http.bucket("mtpay/default", 2.0)

    def queries_queue_up_in_the_process() -> None:
        for _ in range(20):
            pace.reserve()

    state.unavailable, state.on_query = True, queries_queue_up_in_the_process
    (verdict,) = _claims(runtime, 1)
    started = time.monotonic()
    confirm(runtime, [verdict])
    assert time.monotonic() - started < 1.0
    assert (verdict.transient, verdict.counted) == ("query:budget", 1)
    assert state.count("CF0") == 1


def test_a_retry_refused_its_budget_is_told_apart_from_the_providers_failure(
    runtime: Runtime, mtpay: tuple[MTPayState, str],
) -> None:
    """A confirming query whose retry the budget refuses by the batch's deadline (here the 1/s
    account's current and next windows are spent elsewhere as the first query is answered 503)
    leaves its callback transient with the reason `query:budget`, as a poll reports it, not the
    provider's last failure (`query:QueryTransient:http_503`), which a retry might have cured;
    its attempt counts, as the provider was asked."""
    state, url = mtpay
    account = _account_at(runtime, url, 1.0)
    runtime.settings = runtime.settings.model_copy(update={"confirm_wait_s": 0.3})
    runtime.http = QueryHttp(retry=RetryPolicy(attempts=2, backoff_base_s=0.01), burst=3)
    budget = RateBudget(runtime.redis, runtime.recon_prefix)

    def the_next_windows_are_spent() -> None:
        now = int(time.time())
        for slot in (now, now + 1):
            runtime.redis.set(budget.key(account.key, slot), 1, ex=30)

    state.unavailable, state.on_query = True, the_next_windows_are_spent
    (verdict,) = _claims(runtime, 1)
    confirm(runtime, [verdict])
    assert (verdict.transient, verdict.counted) == ("query:budget", 1)
    assert state.count("CF0") == 1
