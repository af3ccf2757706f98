"""Due-order selection: only due pending orders, through the partial index, claimed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Order
from reconcile.due import bring_forward, claim_due, due_query

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _orders(sessions: sessionmaker[Session], *, pending: int, due: int, done: int) -> None:
    """`pending` orders due later, `due` due ones (staggered), `done` terminal ones whose stale
    due time lies in the past; two accounts alternate."""
    rows = []
    specs = [("later", pending, "pending", 3600), ("due", due, "pending", -60),
             ("done", done, "succeeded", -120)]
    for label, count, status, offset in specs:
        for n in range(count):
            rows.append({
                "provider": "mtpay", "account": "a" if n % 2 == 0 else "b",
                "merchant_order_no": f"{label}-{n}", "kind": "payment", "status": status,
                "amount_minor": 100, "paid_minor": 0, "currency": "CNY", "needs_review": False,
                "review_reasons": "[]", "registered": True, "created_at": NOW,
                "updated_at": NOW, "poll_attempts": 0,
                "next_poll_at": NOW + timedelta(seconds=offset + n),
            })
    with sessions.begin() as session:
        session.execute(insert(Order), rows)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE orders"))


def _claim(sessions: sessionmaker[Session], limit: int = 100, **scope: str) -> list[str]:
    with sessions.begin() as session:
        return [o.merchant_order_no
                for o in claim_due(session, NOW, limit=limit, lease_s=600, **scope)]


def test_only_due_pending_orders_are_claimed_oldest_first(
    sessions: sessionmaker[Session],
) -> None:
    """Among thousands of pending orders, a claim returns exactly the due ones, soonest due
    first, and never a terminal order with a leftover due time."""
    _orders(sessions, pending=3000, due=10, done=10)
    assert _claim(sessions, limit=4) == ["due-0", "due-1", "due-2", "due-3"]
    assert _claim(sessions) == [f"due-{n}" for n in range(4, 10)]


def test_claimed_orders_are_not_due_again_until_the_lease_ends(
    sessions: sessionmaker[Session],
) -> None:
    """A second claim at the same moment gets nothing; the lease pushed each due time forward."""
    _orders(sessions, pending=0, due=6, done=0)
    assert len(_claim(sessions)) == 6
    assert _claim(sessions) == []
    with sessions() as session:
        due = session.execute(select(Order.next_poll_at)).scalars().all()
    assert set(due) == {NOW + timedelta(seconds=600)}


def test_a_silence_does_not_bring_forward_orders_a_pass_holds(
    sessions: sessionmaker[Session],
) -> None:
    """A claimed order's due time is the end of its lease: bringing it forward would let a
    second pass query it while the first still does. Orders due later are brought forward."""
    _orders(sessions, pending=2, due=2, done=0)
    assert len(_claim(sessions, account="a")) == 1
    with sessions.begin() as session:
        moved = bring_forward(session, NOW, "mtpay", "a", limit=10, created_before=NOW,
                              leased_until=NOW + timedelta(seconds=600))
    assert moved == 1
    assert _claim(sessions, account="a") == ["later-0"]


def test_claims_filter_by_provider_and_account(sessions: sessionmaker[Session]) -> None:
    """A claim scoped to one account sees only that account's orders."""
    _orders(sessions, pending=0, due=6, done=0)
    assert _claim(sessions, provider="opay") == []
    assert _claim(sessions, provider="mtpay", account="b") == ["due-1", "due-3", "due-5"]


def test_due_selection_reads_the_partial_index(sessions: sessionmaker[Session]) -> None:
    """The due query's plan is an index scan of `ix_orders_due`, never a scan of the table."""
    _orders(sessions, pending=3000, due=10, done=10)
    with sessions() as session:
        bind = session.get_bind()
        assert isinstance(bind, Engine)
        stmt = due_query(NOW, 100, "mtpay", "a")
        compiled = stmt.compile(bind, compile_kwargs={"literal_binds": True})
        explain = "EXPLAIN QUERY PLAN" if bind.dialect.name == "sqlite" else "EXPLAIN"
        plan = " ".join(str(r) for r in session.execute(text(f"{explain} {compiled}")))
    assert "ix_orders_due" in plan
    assert "Seq Scan" not in plan
    assert "SCAN orders'" not in plan  # SQLite's whole-table scan, with no index named


def test_concurrent_claims_skip_locked_rows(sessions: sessionmaker[Session]) -> None:
    """While one pass holds its claim uncommitted, another claims the other due orders only."""
    bind = sessions.kw["bind"]
    if bind.dialect.name != "postgresql":
        pytest.skip("SQLite serialises claims at BEGIN; SKIP LOCKED is PostgreSQL's")
    _orders(sessions, pending=0, due=8, done=0)
    with sessions.begin() as first:
        held = [o.merchant_order_no for o in claim_due(first, NOW, limit=3, lease_s=600)]
        other = _claim(sessions)
    assert held == ["due-0", "due-1", "due-2"]
    assert other == [f"due-{n}" for n in range(3, 8)]
