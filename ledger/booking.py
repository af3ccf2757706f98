"""Booking money: the payment row of a succeeded event and its balanced postings.

The rows are written with Core statements on the session's connection: they are never read
back through the ORM here, and the unit of work's per-object bookkeeping was the worker's
largest cost. Only the order, which callers go on reading, is an ORM object.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from ledger.models import Journal, Order, Payment, Posting
from ledger.money import to_minor
from ledger.status import Kind, Status

if TYPE_CHECKING:
    from ledger.apply import Incoming

_EXPLAINED_AMOUNT = frozenset({"partial_payment", "overpayment"})
_PAYMENTS: Table = Payment.__table__  # type: ignore[assignment]
_JOURNAL: Table = Journal.__table__  # type: ignore[assignment]
_POSTINGS: Table = Posting.__table__  # type: ignore[assignment]


def move_money(session: Session, order: Order, event: Incoming, now: datetime) -> list[str]:
    """Record the payment and its balanced postings; the review flags the amounts call for."""
    flags: list[str] = []
    currency = (event.currency or order.currency).upper()
    # The order's paid amount is in its own currency: money in another one is booked and
    # listed in its currency, and a person decides what it is worth.
    counts = currency == order.currency
    if not counts:
        flags.append("currency_mismatch")
    if event.amount is None:
        # A success that states no amount: the registered amount is booked, and someone looks at
        # it, since no message said that this much was paid.
        flags.append("amount_missing")
        amount = order.amount_minor
    else:
        amount = to_minor(event.amount, currency)
    kind = Kind(order.kind)
    payment_id = _insert_id(
        session,
        _PAYMENTS,
        {
            "order_id": order.id,
            "provider_txn_id": event.event_id,
            "amount_minor": amount,
            "status": Status.SUCCEEDED.value,
            "paid_at": event.paid_at,
        },
    )
    if kind is Kind.STATIC_VA:
        order.paid_minor += amount if counts else 0
    elif counts:
        order.paid_minor = amount
        if amount_differs(amount, order.amount_minor, event.flags):
            flags.append("amount_mismatch")
    post(session, order, payment_id, amount, currency, now)
    return flags


def payment_currencies(session: Session, order_id: int) -> dict[int, str]:
    """Each booked payment's currency (payment id → ISO code), read from its postings: the
    payment row has none of its own, and may differ from its order's."""
    rows = session.execute(
        select(Journal.payment_id, func.min(Posting.currency))
        .join(Posting, Posting.journal_id == Journal.id)
        .where(Journal.order_id == order_id, Journal.payment_id.is_not(None))
        .group_by(Journal.payment_id)
    )
    return {int(payment_id): currency for payment_id, currency in rows}


def paid_in(session: Session, order: Order, currency: str) -> int:
    """The sum of the order's payments booked in `currency`, in its minor units."""
    currencies = payment_currencies(session, order.id)
    amounts = session.execute(
        select(Payment.id, Payment.amount_minor).where(Payment.order_id == order.id)
    )
    return sum(int(amount) for pid, amount in amounts if currencies.get(pid) == currency)


def amount_differs(paid_minor: int, registered_minor: int, flags: Iterable[str]) -> bool:
    """Whether a payment of `paid_minor` calls for `amount_mismatch`: the order has a registered
    amount (not 0) and the payment differs from it, and no flag in `flags` (the provider's own
    `partial_payment` / `overpayment`) explains the difference already."""
    explained = _EXPLAINED_AMOUNT.intersection(flags)
    return bool(registered_minor) and paid_minor != registered_minor and not explained


def ledger_accounts(order: Order) -> tuple[str, str]:
    """(debit, credit) ledger accounts for a succeeded money movement on `order`."""
    clearing = f"clearing:{order.provider}/{order.account}"
    if order.kind == Kind.PAYOUT.value:
        return f"payouts:{order.provider}/{order.account}", clearing
    return clearing, f"receipts:{order.provider}/{order.account}"


def post(
    session: Session, order: Order, payment_id: int, amount: int, currency: str, now: datetime,
    memo: str | None = None, accounts: tuple[str, str] | None = None,
) -> None:
    """One journal entry whose two legs sum to zero: `amount` from the credit account to the
    debit one (the order's kind's, unless `accounts` says otherwise)."""
    journal_id = _insert_id(
        session,
        _JOURNAL,
        {"order_id": order.id, "payment_id": payment_id, "memo": memo or order.kind,
         "created_at": now},
    )
    debit, credit = accounts or ledger_accounts(order)
    session.execute(
        insert(_POSTINGS),
        [
            {"journal_id": journal_id, "ledger_account": debit, "currency": currency,
             "amount_minor": amount},
            {"journal_id": journal_id, "ledger_account": credit, "currency": currency,
             "amount_minor": -amount},
        ],
    )


def _insert_id(session: Session, table: Table, values: dict[str, object]) -> int:
    return int(session.execute(insert(table).returning(table.c.id), values).scalar_one())
