"""A registration that arrives after callbacks created its order: what they booked is put in the
terms the merchant registered (the kind's ledger accounts, a static VA's repayments).

The caller holds the order row locked, in the transaction that marks it registered, so this runs
once per order: a repeat registration finds it registered and changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ledger.booking import ledger_accounts, post
from ledger.models import Journal, Order, OrderEvent, Payment, Posting, ProviderEventSeen
from ledger.status import Kind, Status


def rebook_kind(session: Session, order: Order, kind: Kind, now: datetime) -> list[str]:
    """Set the order's kind; money booked in the old kind's accounts is moved to the new one's:
    per payment, a journal reversing what was booked and a journal booking it again, both
    balanced. Returns `kind_changed` if money moved, for a person to see that a callback's
    kind (defaulted to a payment where the provider names none) was not the merchant's.

    A payment and a static VA share their accounts (money in), so nothing moves between them;
    a payout's success registered as a static VA becomes one of its repayments."""
    old_debit, old_credit = ledger_accounts(order)
    order.kind = kind.value
    if ledger_accounts(order) == (old_debit, old_credit):
        return []
    booked = session.execute(
        select(Journal.payment_id, Posting.currency, func.sum(Posting.amount_minor))
        .join(Posting, Posting.journal_id == Journal.id)
        .where(Journal.order_id == order.id, Journal.payment_id.is_not(None),
               Posting.ledger_account == old_debit)
        .group_by(Journal.payment_id, Posting.currency)
        .order_by(Journal.payment_id)
    ).all()
    moved = False
    for payment_id, currency, net in booked:
        if not net:
            continue
        post(session, order, int(payment_id), int(net), currency, now,
             memo="kind_changed:reversal", accounts=(old_credit, old_debit))
        post(session, order, int(payment_id), int(net), currency, now)
        moved = True
    return ["kind_changed"] if moved else []


def reopen_repayments(session: Session, order: Order) -> int:
    """Make the static VA's successes that were never booked applicable again; how many.

    Before the registration the order looked like a payment, which succeeds once: a repayment
    after the first was a `duplicate` (flagged `another_payment`) and booked nothing. The ledger
    cannot book it here, as it never stored that event's amount (only the raw callback holds
    it, and reading that is a provider's job), so its dedupe row is dropped instead: the next
    poll of the VA, or a replay of its callback, applies it as a repayment. The dedupe row's
    unique constraint, taken again by that first application, keeps it to once.
    """
    booked = select(Payment.provider_txn_id).where(Payment.order_id == order.id)
    unbooked = session.execute(
        select(OrderEvent.event_id, OrderEvent.provider_status)
        .where(
            OrderEvent.order_id == order.id,
            OrderEvent.status == Status.SUCCEEDED.value,
            OrderEvent.event_id.is_not(None),
            OrderEvent.event_id.not_in(booked),
        )
        .distinct()
    ).all()
    for event_id, provider_status in unbooked:
        session.execute(
            delete(ProviderEventSeen).where(
                ProviderEventSeen.provider == order.provider,
                ProviderEventSeen.account == order.account,
                ProviderEventSeen.event_id == event_id,
                ProviderEventSeen.provider_status == provider_status,
                ProviderEventSeen.order_id == order.id,
            )
        )
    return len(unbooked)
