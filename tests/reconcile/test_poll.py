"""Polling through a pass: lost callbacks recovered, backoff, not-found, mismatches, give-up."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from ledger.models import OrderEvent, Payment, ProviderEventSeen, ReconcileRun
from ledger.status import Kind
from providers.http import QueryHttp, RetryPolicy
from reconcile.runner import run_pass
from tests.reconcile.conftest import Recon


def test_lost_callback_is_resolved_by_one_pass_after_stale_after(recon: Recon) -> None:
    """An order whose callback never came is not queried before stale_after, then is resolved
    by the first pass after it, with a `poll` history entry and balanced postings."""
    recon.register("M1")
    recon.mtpay.set("M1", "SUCCESS")
    recon.clock.advance(seconds=600)
    early = recon.pass_()
    assert recon.mtpay.count() == 0
    assert early["resolved_by_poll"]["count"] == 0
    recon.clock.advance(seconds=301)
    report = recon.pass_()
    assert recon.mtpay.count("M1") == 1
    assert report["state"] == "done"
    assert report["resolved_by_poll"]["orders"][0]["order"] == "mtpay/default/M1"
    assert report["resolved_by_poll"]["orders"][0]["status"] == "succeeded"
    order = recon.order("M1")
    assert (order.status, order.paid_minor, order.next_poll_at) == ("succeeded", 10000, None)
    with recon.sessions() as session:
        history = session.execute(select(OrderEvent).where(OrderEvent.order_id == order.id))
        assert [(h.source, h.outcome) for h in history.scalars()] == [("poll", "applied")]
    assert report["ledger"]["balanced"] is True
    assert {b["account"] for b in report["ledger"]["balances"]} == {
        "clearing:mtpay/default", "receipts:mtpay/default"}
    assert report["still_pending"]["count"] == 0


def test_backoff_is_respected_between_passes(recon: Recon) -> None:
    """A still-pending order is queried once, not again by a pass right after, and next after
    5 minutes, then 15 minutes."""
    recon.register("M2")
    recon.mtpay.set("M2", "PENDING")
    recon.clock.advance(seconds=901)
    recon.pass_()
    recon.clock.advance(seconds=1)
    recon.pass_()
    assert recon.mtpay.count("M2") == 1
    order = recon.order("M2")
    assert order.poll_attempts == 1
    assert order.next_poll_at == recon.clock() - timedelta(seconds=1) + timedelta(seconds=300)
    recon.clock.advance(seconds=299)
    recon.pass_()
    assert recon.mtpay.count("M2") == 2
    recon.clock.advance(seconds=899)
    recon.pass_()
    assert recon.mtpay.count("M2") == 2
    recon.clock.advance(seconds=1)
    report = recon.pass_()
    assert recon.mtpay.count("M2") == 3
    assert recon.order("M2").poll_attempts == 3
    assert report["still_pending"]["count"] == 1
    assert report["still_pending"]["ageing"]["<1h"] == 1


def test_per_account_schedule_override(recon: Recon) -> None:
    """An account's `poll_backoff_s` replaces the default backoff."""
    recon.poll_backoff_s = (60,)
    recon.register("M3")
    recon.mtpay.set("M3", "PENDING")
    recon.clock.advance(seconds=901)
    recon.pass_()
    assert recon.order("M3").next_poll_at == recon.clock() + timedelta(seconds=60)


def test_not_found_and_amount_mismatch_are_reported(recon: Recon) -> None:
    """An order unknown at the provider is `not_found` (and backs off); a paid amount that
    differs from the registered one is a mismatch and flags the order for review."""
    recon.register("NF1")
    recon.register("AM1", amount="100.00")
    recon.mtpay.set("AM1", "SUCCESS", amount="99.00")
    recon.clock.advance(seconds=901)
    report = recon.pass_()
    assert [o["order"] for o in report["not_found"]["orders"]] == ["mtpay/default/NF1"]
    assert report["mismatches"]["orders"] == [
        {"order": "mtpay/default/AM1", "kind": "amount", "expected": "100.00", "got": "99.00"}
    ]
    review = {o["order"]: o["reasons"] for o in report["needs_review"]["orders"]}
    assert review == {"mtpay/default/AM1": ["amount_mismatch"]}
    assert recon.order("NF1").poll_attempts == 1
    assert recon.order("NF1").next_poll_at is not None
    assert json.loads(recon.order("AM1").review_reasons) == ["amount_mismatch"]
    assert sorted(report["alerts"]["sent"]) == []  # no SMS configured: log lines only


def test_a_currency_mismatch_is_reported_as_one(recon: Recon) -> None:
    """A success in another currency than the order's is in the report's mismatches, as the
    order's review flag says, not only among the orders to review."""
    recon.register("CM1", amount="100.00")
    recon.mtpay.set("CM1", "SUCCESS")
    recon.mtpay.orders["CM1"]["fiatCurrency"] = "usd"
    recon.clock.advance(seconds=901)
    report = recon.pass_()
    assert json.loads(recon.order("CM1").review_reasons) == ["currency_mismatch"]
    assert report["mismatches"]["orders"] == [
        {"order": "mtpay/default/CM1", "kind": "currency", "expected": "CNY", "got": "USD"}
    ]


def test_static_va_repayments_found_by_a_poll_are_resolved_by_it(recon: Recon) -> None:
    """A static VA stays pending however many repayments it takes, so each repayment a poll
    finds first (its callback was lost) is listed in `resolved_by_poll` by itself; one already
    known is not listed again."""
    recon.register("VA1", amount="0", kind=Kind.STATIC_VA)
    recon.mtpay.set("VA1", "SUCCESS", amount="30.00")
    recon.clock.advance(seconds=901)
    first = recon.pass_()
    assert first["resolved_by_poll"]["orders"] == [
        {"order": "mtpay/default/VA1", "repayment": "MT-VA1", "status": "succeeded",
         "seen": ["SUCCESS"]}
    ]
    recon.clock.advance(seconds=300)
    again = recon.pass_()
    assert recon.mtpay.count("VA1") == 2
    assert again["resolved_by_poll"]["count"] == 0
    recon.mtpay.set("VA1", "SUCCESS", amount="20.00")
    recon.mtpay.orders["VA1"]["orderNo"] = "MT-VA1-2"
    recon.clock.advance(seconds=900)
    second = recon.pass_()
    assert [o.get("repayment") for o in second["resolved_by_poll"]["orders"]] == ["MT-VA1-2"]
    order = recon.order("VA1")
    assert (order.status, order.paid_minor) == ("pending", 5000)


@pytest.mark.parametrize(
    ("reason", "change"),
    [
        ("bad_amount_in_reply", {"depositAmount": "99.001"}),  # finer than CNY's fen
        ("malformed_reply", {"orderNo": "X" * 129}),  # wider than the ledger's column
        ("wrong_order_in_reply", {"merchantOrderNo": "SOMEONE-ELSE"}),
    ],
)
def test_an_answer_the_ledger_cannot_take_flags_the_order_and_keeps_its_backoff(
    recon: Recon, reason: str, change: dict[str, Any]
) -> None:
    """A success the ledger cannot hold as the provider states it changes nothing (no payment,
    no history, no dedupe row that would make the next answer a duplicate), flags the order for
    review with the reason, and the order is asked again by its backoff, where before it came
    back at every claim lease, unflagged, for ever."""
    recon.register("UA1")
    recon.mtpay.set("UA1", "SUCCESS")
    recon.mtpay.orders["UA1"].update(change)
    recon.clock.advance(seconds=901)
    report = recon.pass_()
    assert recon.mtpay.count("UA1") == 1
    order = recon.order("UA1")
    assert (order.status, order.paid_minor, order.needs_review) == ("pending", 0, True)
    assert json.loads(order.review_reasons) == [reason]
    assert order.poll_attempts == 1
    assert order.next_poll_at == recon.clock() + timedelta(seconds=300)
    review = {o["order"]: o["reasons"] for o in report["needs_review"]["orders"]}
    assert review == {"mtpay/default/UA1": [reason]}
    assert report["resolved_by_poll"]["count"] == 0
    with recon.sessions() as session:
        for table in (OrderEvent, ProviderEventSeen, Payment):
            rows = select(func.count()).select_from(table).where(table.order_id == order.id)
            assert session.execute(rows).scalar_one() == 0, table.__name__
    # Once the provider's record is right, the next pass in the backoff applies it.
    recon.mtpay.set("UA1", "SUCCESS")
    recon.clock.advance(seconds=300)
    recon.pass_()
    assert recon.mtpay.count("UA1") == 2
    order = recon.order("UA1")
    assert (order.status, order.paid_minor) == ("succeeded", 10000)
    assert json.loads(order.review_reasons) == [reason]


def test_seven_days_pending_is_flagged_unresolved_and_polling_stops(recon: Recon) -> None:
    """An order still pending 7 days after creation is flagged `unresolved` and never
    queried again."""
    recon.register("OLD1")
    recon.mtpay.set("OLD1", "PENDING")
    recon.clock.advance(days=8)
    report = recon.pass_()
    assert [o["order"] for o in report["unresolved"]["orders"]] == ["mtpay/default/OLD1"]
    order = recon.order("OLD1")
    assert order.needs_review is True
    assert json.loads(order.review_reasons) == ["unresolved"]
    assert order.next_poll_at is None
    assert report["still_pending"]["ageing"][">7d"] == 1
    recon.clock.advance(days=2)
    recon.pass_()
    assert recon.mtpay.count("OLD1") == 1


def test_an_order_the_provider_is_always_busy_about_is_given_up_after_seven_days(
    recon: Recon,
) -> None:
    """A busy answer is not an attempt (the order comes back when its claim's lease ends), but
    a provider that answers busy for a week does not keep the order polled for ever: it is
    flagged `unresolved` like any other order pending that long."""
    recon.register("BUSY1")
    recon.mtpay.set("BUSY1", "SUCCESS")
    recon.mtpay.busy = True
    recon.clock.advance(seconds=901)
    recon.pass_()
    order = recon.order("BUSY1")
    assert (order.poll_attempts, order.needs_review) == (0, False)
    assert order.next_poll_at is not None
    asked = recon.mtpay.count("BUSY1")
    assert asked >= 1
    recon.clock.advance(days=7)
    report = recon.pass_()
    assert recon.mtpay.count("BUSY1") > asked
    assert [o["order"] for o in report["unresolved"]["orders"]] == ["mtpay/default/BUSY1"]
    order = recon.order("BUSY1")
    assert (order.status, order.next_poll_at) == ("pending", None)
    assert json.loads(order.review_reasons) == ["unresolved"]


def test_queued_run_is_taken_over_and_finished(recon: Recon) -> None:
    """A run queued by the API (state `queued`) is the one the pass fills in and finishes."""
    with recon.sessions.begin() as session:
        run = ReconcileRun(started_at=recon.clock(), state="queued", report="{}")
        session.add(run)
        session.flush()
        run_id = run.id
    assert run_pass(recon.ctx(), run_id=run_id, provider="mtpay") == run_id
    report = recon.report(run_id)
    assert report["state"] == "done"
    assert report["scope"] == {"provider": "mtpay", "account": None}
    assert "mtpay/default" in report["accounts"]


def test_pass_scoped_to_another_provider_queries_nothing(recon: Recon) -> None:
    """A pass for a provider with no configured account claims and queries nothing."""
    recon.register("M4")
    recon.clock.advance(seconds=901)
    report = recon.report(run_pass(recon.ctx(), provider="opay"))
    assert (report["state"], report["accounts"], recon.mtpay.count()) == ("done", {}, 0)


def test_two_passes_at_once_query_each_order_once(recon: Recon) -> None:
    """Two passes running concurrently (two beat instances) split the due orders between
    them: every order is queried exactly once."""
    for n in range(20):
        recon.register(f"P{n}")
        recon.mtpay.set(f"P{n}", "PENDING")
    recon.clock.advance(seconds=901)

    def one_pass() -> int:
        loop, http = asyncio.new_event_loop(), QueryHttp(retry=RetryPolicy(attempts=1))
        ctx = replace(recon.ctx(), run=loop.run_until_complete, http=http)
        try:
            return run_pass(ctx)
        finally:
            loop.run_until_complete(http.close())
            loop.close()

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _i: one_pass(), range(2)))
    claimed = [recon.report(r)["accounts"]["mtpay/default"]["claimed"] for r in runs]
    assert sum(claimed) == 20
    assert sorted(recon.mtpay.queries) == sorted(f"P{n}" for n in range(20))
