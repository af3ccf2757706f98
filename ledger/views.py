"""Read models: the order JSON of CONTRACT §3, callback listings, balances and the invariant."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, load_only

from ledger.booking import payment_currencies
from ledger.models import Callback, Journal, Order, OrderEvent, Payment, Posting
from ledger.money import format_minor


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def find_order(
    session: Session, provider: str, account: str, merchant_order_no: str
) -> Order | None:
    """The order `merchant_order_no` of this provider account (unique per account)."""
    stmt = select(Order).where(
        Order.provider == provider,
        Order.account == account,
        Order.merchant_order_no == merchant_order_no,
    )
    return session.execute(stmt).scalar_one_or_none()


def order_json(session: Session, order: Order) -> dict[str, Any]:
    """The order with its payments and full history. Each payment is shown in its own currency,
    which may not be the order's (flagged `currency_mismatch`); `paid_amount` counts only the
    payments in the order's currency."""
    cur = order.currency
    currencies = payment_currencies(session, order.id)
    payments = session.execute(
        select(Payment).where(Payment.order_id == order.id).order_by(Payment.id)
    ).scalars()
    history = session.execute(
        select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
    ).scalars()
    return {
        "provider": order.provider,
        "account": order.account,
        "merchant_order_no": order.merchant_order_no,
        "provider_order_no": order.provider_order_no,
        "kind": order.kind,
        "status": order.status,
        "amount": format_minor(order.amount_minor, cur),
        "paid_amount": format_minor(order.paid_minor, cur),
        "currency": cur,
        "needs_review": order.needs_review,
        "review_reasons": json.loads(order.review_reasons),
        "payments": [
            {
                "provider_txn_id": p.provider_txn_id,
                "amount": format_minor(p.amount_minor, currencies.get(p.id, cur)),
                "currency": currencies.get(p.id, cur),
                "status": p.status,
                "paid_at": iso(p.paid_at),
            }
            for p in payments
        ],
        "history": [
            {
                "at": iso(h.at),
                "source": h.source,
                "callback_id": h.callback_id,
                "provider_status": h.provider_status,
                "status": h.status,
                "outcome": h.outcome,
            }
            for h in history
        ],
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }


def callback_summary(cb: Callback) -> dict[str, Any]:
    """The listing form of a stored callback."""
    return {
        "id": cb.id,
        "provider": cb.provider,
        "account": cb.account,
        "state": cb.state,
        "reason": cb.reason,
        "received_at": iso(cb.received_at),
        "processed_at": iso(cb.processed_at),
        "attempts": cb.attempts,
        "merchant_order_no": cb.merchant_order_no,
    }


_SUMMARY_COLUMNS = (
    Callback.id, Callback.provider, Callback.account, Callback.state, Callback.reason,
    Callback.received_at, Callback.processed_at, Callback.attempts, Callback.merchant_order_no,
)


def list_callbacks(
    session: Session, *, state: str | None, provider: str | None, limit: int
) -> list[dict[str, Any]]:
    """Stored callbacks, newest first."""
    # The summary's columns only: a body may be 64 KiB and a listing 1000 rows. raiseload: a
    # summary that read another column would fail here, not send a query per row.
    stmt = select(Callback).options(load_only(*_SUMMARY_COLUMNS, raiseload=True))
    if state:
        stmt = stmt.where(Callback.state == state)
    if provider:
        stmt = stmt.where(Callback.provider == provider)
    rows = session.execute(stmt.order_by(Callback.id.desc()).limit(limit)).scalars()
    return [callback_summary(cb) for cb in rows]


def balances(session: Session) -> list[dict[str, Any]]:
    """Postings summed per ledger account and currency."""
    rows = session.execute(
        select(Posting.ledger_account, Posting.currency, func.sum(Posting.amount_minor))
        .group_by(Posting.ledger_account, Posting.currency)
        .order_by(Posting.ledger_account, Posting.currency)
    )
    return [
        {
            "account": acct,
            "currency": cur,
            "balance": format_minor(int(total), cur),
            "balance_minor": int(total),
        }
        for acct, cur, total in rows
    ]


def unbalanced_journals(session: Session) -> list[int]:
    """Journal entries whose postings do not sum to zero or mix currencies (must be empty)."""
    rows = session.execute(
        select(Journal.id)
        .join(Posting, Posting.journal_id == Journal.id)
        .group_by(Journal.id)
        .having(
            (func.sum(Posting.amount_minor) != 0)
            | (func.count(func.distinct(Posting.currency)) != 1)
        )
    )
    return [int(r[0]) for r in rows]
