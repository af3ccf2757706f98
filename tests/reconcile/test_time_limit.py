"""A pass told to stop by Celery's soft time limit (`OutOfTime`, raised by a signal handler at
whatever line runs) stops wherever it lands: its run fails as `time_limit` with its report, and
the orders it claimed but did not answer are due again at once, not after their lease."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar, cast

import pytest
from billiard.pool import soft_timeout_sighandler
from sqlalchemy import event, func, select

from ledger.models import ReconcileRun
from payhook.accounts import Account, Accounts
from providers.base import Provider
from reconcile.context import OutOfTime, PassContext, run_to_end
from reconcile.runner import run_pass
from tests.reconcile.conftest import Recon

T = TypeVar("T")
ORDERS = ("TL1", "TL2", "TL3")


@pytest.fixture
def due(recon: Recon) -> None:
    """Three orders the provider says succeeded, due to be polled now."""
    for number in ORDERS:
        recon.register(number)
        recon.mtpay.set(number, "SUCCESS")
    recon.clock.advance(seconds=901)


def _ctx(recon: Recon, **config: Any) -> PassContext:
    """The harness's context, its coroutines run as a worker's are (`run_to_end`)."""

    def run(coro: Coroutine[Any, Any, T], /) -> T:
        return run_to_end(recon.loop, coro)

    return replace(recon.ctx(**config), run=run)


def _stopped(recon: Recon, ctx: PassContext) -> dict[str, Any]:
    """Run a pass that the soft time limit stops (the limit goes on up, to the task); its run."""
    with pytest.raises(OutOfTime):
        run_pass(ctx)
    with recon.sessions() as session:
        run_id = session.scalar(select(func.max(ReconcileRun.id)))
    assert run_id is not None
    return recon.report(run_id)


def _handed_back(recon: Recon) -> None:
    """Every order is still pending and due now, not at the end of its claim's lease."""
    for number in ORDERS:
        order = recon.order(number)
        assert (order.status, order.next_poll_at) == ("pending", recon.clock()), number


def test_a_pass_told_to_stop_while_its_queries_wait_stops_at_once(recon: Recon, due: None
                                                                   ) -> None:
    """The signal, billiard's own handler, arrives while the loop waits on three queries the
    provider holds for 3 s: the pass stops within a second, leaves no query running on the
    loop, fails its run as `time_limit` and hands its three orders back."""
    recon.mtpay.held_until = time.time() + 3
    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    started = time.monotonic()
    try:
        timer.start()
        run = _stopped(recon, _ctx(recon))
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert time.monotonic() - started < 2.5
    assert not asyncio.all_tasks(recon.loop)
    assert (run["state"], run["error"], run["released"]) == ("failed", "time_limit", 3)
    assert run["accounts"]["mtpay/default"]["claimed"] == 3
    _handed_back(recon)


class _LimitInQuery:
    """MTPay, but the soft time limit lands in the first query's coroutine (as the signal may
    in any coroutine step)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def query(self, *args: Any) -> Any:
        raise OutOfTime


def test_a_pass_out_of_time_in_a_query_sends_no_other(recon: Recon, due: None) -> None:
    """The limit raised in one query's coroutine is not that order's failure (`except
    Exception` in the query's handling lets it through): no other query is sent, the run fails
    as `time_limit`, and all three orders are handed back."""
    ctx = _ctx(recon, concurrency=1)
    acct = recon.account()
    limited = Account(cast(Provider, _LimitInQuery(acct.provider)), acct.name, acct.config)
    ctx = replace(ctx, accounts=Accounts({("mtpay", "default"): limited}))
    run = _stopped(recon, ctx)
    assert recon.mtpay.count() == 0
    assert (run["state"], run["error"], run["released"]) == ("failed", "time_limit", 3)
    _handed_back(recon)


def test_a_pass_out_of_time_in_its_apply_transaction_still_stores_its_run(
    recon: Recon, due: None
) -> None:
    """The limit raised inside the transaction applying the answers (at a savepoint, which a
    failing order's handling would otherwise take for that order's own failure) rolls it back;
    the run is stored failed as `time_limit` in a transaction of its own, and the three orders,
    none applied, are handed back."""
    engine = recon.sessions.kw["bind"]
    raised: list[str] = []

    def limit_at_savepoint(*args: Any) -> None:
        statement = str(args[2])
        if statement.startswith("SAVEPOINT") and not raised:
            raised.append(statement)
            raise OutOfTime

    event.listen(engine, "before_cursor_execute", limit_at_savepoint)
    try:
        run = _stopped(recon, _ctx(recon))
    finally:
        event.remove(engine, "before_cursor_execute", limit_at_savepoint)
    assert raised
    assert recon.mtpay.count() == 3
    assert (run["state"], run["error"], run["released"]) == ("failed", "time_limit", 3)
    assert run["resolved_by_poll"]["count"] == 0
    _handed_back(recon)


def test_a_pass_past_its_own_deadline_stops_with_no_signal(recon: Recon, due: None) -> None:
    """No signal at all (as when asyncio drops one landing in its own callbacks): a pass whose
    deadline (0.5 s) passes while the provider holds its first query for 1.5 s sends no second
    query, fails its run as `time_limit` and hands its three orders back, long before it would
    have asked them all."""
    recon.mtpay.held_until = time.time() + 1.5
    started = time.monotonic()
    run = _stopped(recon, _ctx(recon, concurrency=1, time_limit_s=0.5))
    assert time.monotonic() - started < 2.5
    assert recon.mtpay.count() == 1
    assert (run["state"], run["error"], run["released"]) == ("failed", "time_limit", 3)
    assert run["accounts"]["mtpay/default"]["claimed"] == 3
    _handed_back(recon)


def test_a_pass_past_its_deadline_before_its_answers_applies_none(recon: Recon, due: None
                                                                  ) -> None:
    """The deadline passing while the last query is under way: its answers are not applied
    (no transaction the soft time limit could break into), the run fails as `time_limit` and
    the three orders are handed back."""
    recon.mtpay.held_until = time.time() + 1.0
    run = _stopped(recon, _ctx(recon, time_limit_s=0.5))
    assert recon.mtpay.count() == 3
    assert (run["state"], run["error"], run["released"]) == ("failed", "time_limit", 3)
    assert run["resolved_by_poll"]["count"] == 0
    _handed_back(recon)


def test_a_pass_past_its_deadline_before_claiming_claims_nothing(recon: Recon, due: None
                                                                 ) -> None:
    """A deadline already passed when the pass would claim: no order is claimed or asked, and
    all three stay due now (nothing to hand back)."""
    run = _stopped(recon, _ctx(recon, time_limit_s=0.0))
    assert recon.mtpay.count() == 0
    assert (run["state"], run["error"], run["released"]) == ("failed", "time_limit", 0)
    for number in ORDERS:
        due_at = recon.order(number).next_poll_at
        assert due_at is not None, number
        assert due_at <= recon.clock(), number
