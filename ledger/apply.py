"""Applying one provider event to the ledger: dedupe, the status rules, payments and postings.

The caller owns the transaction. The order row is locked first (FOR UPDATE on PostgreSQL,
BEGIN IMMEDIATE on SQLite), and the event's dedupe row is unique, so two workers applying the
same event at once serialise and the second one sees a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Table, insert, select, tuple_
from sqlalchemy.orm import Session

from ledger import booking
from ledger.db import insert_ignore
from ledger.fields import check_fields
from ledger.models import Order, OrderEvent, Payment, ProviderEventSeen
from ledger.money import to_minor
from ledger.status import Decision, Kind, Outcome, Status, decide, strongest

# The history rows are written with a Core statement (see ledger.booking).
_ORDER_EVENTS: Table = OrderEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Incoming:
    """A provider event in ledger terms, with where it came from (`callback` or `poll`)."""

    provider: str
    account: str
    merchant_order_no: str
    event_id: str
    provider_status: str
    status: Status
    amount: Decimal | None
    currency: str | None
    source: str
    callback_id: int | None = None
    provider_order_no: str | None = None
    paid_at: datetime | None = None
    kind: Kind | None = None
    flags: tuple[str, ...] = ()
    # When a still-pending order should next be asked about (now + the account's stale_after):
    # news from the provider makes a scheduled poll unnecessary, so it moves the poll out.
    poll_after: datetime | None = None


@dataclass(frozen=True)
class Applied:
    """What applying did."""

    outcome: Outcome
    order_id: int
    flags: tuple[str, ...]


OrderKey = tuple[str, str, str]  # (provider, account, merchant_order_no)


def lock_orders(session: Session, keys: Iterable[OrderKey]) -> dict[OrderKey, Order]:
    """Lock the existing orders among `keys` in one statement, in id order (so two workers
    locking overlapping batches queue instead of deadlocking); pass the result to
    `apply_event` as `locked`, which then needs no select of its own for them."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = session.execute(
        select(Order)
        .where(tuple_(Order.provider, Order.account, Order.merchant_order_no).in_(wanted))
        .order_by(Order.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalars()
    return {(o.provider, o.account, o.merchant_order_no): o for o in rows}


def apply_event(
    session: Session, event: Incoming, now: datetime, locked: dict[OrderKey, Order] | None = None
) -> Applied:
    """Apply `event` once: a repeat of a seen event is a `duplicate` and changes nothing else.

    `locked`: orders this transaction already holds (from `lock_orders`); an order created
    here is added to it.
    """
    check_fields(event)
    key = (event.provider, event.account, event.merchant_order_no)
    if locked is not None and key in locked:
        order, created = locked[key], False
    else:
        order, created = _lock_order(session, event, now)
        if locked is not None:
            locked[key] = order
    # Nothing below reads the order back from the database: the order is flushed once, later.
    with session.no_autoflush:
        seen_id = insert_ignore(
            session,
            ProviderEventSeen.__table__,  # type: ignore[arg-type]
            {
                "provider": event.provider,
                "account": event.account,
                "event_id": event.event_id,
                "provider_status": event.provider_status,
                "order_id": order.id,
                "created_at": now,
            },
        )
        if seen_id is None:
            earlier = _earlier_outcome(session, order, event)
            if earlier is not None:  # this same callback, processed again (a replay)
                return Applied(earlier, order.id, ())
            _history(session, order, event, Outcome.DUPLICATE, now)
            return Applied(Outcome.DUPLICATE, order.id, ())
        kind = Kind(order.kind)
        current = (_repayment_status(session, order, event) if kind is Kind.STATIC_VA
                   else Status(order.status))
        decision = decide(current, event.status, kind)
        flags = list(decision.flags) + list(event.flags)
        if _another_payment(session, order, event, decision):
            flags.append("another_payment")
        if created:
            flags.append("unregistered_order")
        if decision.moves_money:
            flags += booking.move_money(session, order, event, now)
        if decision.new_status is not None:
            order.status = decision.new_status.value
        if order.status != Status.PENDING.value:
            order.next_poll_at = None
        elif event.source == "callback" and event.poll_after is not None:
            order.next_poll_at = event.poll_after
            order.poll_attempts = 0
        if event.provider_order_no and not order.provider_order_no:
            order.provider_order_no = event.provider_order_no
        flag_order(order, flags)
        order.updated_at = now
        _history(session, order, event, decision.outcome, now)
        return Applied(decision.outcome, order.id, tuple(flags))


def _another_payment(session: Session, order: Order, event: Incoming, decision: Decision) -> bool:
    """Whether `event` is a success the rules call a `duplicate` (the order has succeeded) that
    names another transaction than the one booked: the customer paid twice, or the order is a
    static VA the merchant has not registered yet and this is its next repayment. Nothing is
    booked for it (CONTRACT §5: same terminal is a duplicate); the flag makes a person look,
    and registering the order as a static VA makes it applicable again (`late_registration`).
    A poll's answer describes the order rather than one transaction, so it is not held to this.
    """
    if decision.outcome is not Outcome.DUPLICATE or event.status is not Status.SUCCEEDED:
        return False
    if event.source == "poll":
        return False
    booked = session.execute(
        select(Payment.provider_txn_id).where(Payment.order_id == order.id)
    ).scalars().all()
    return bool(booked) and event.event_id not in booked


def _earlier_outcome(session: Session, order: Order, event: Incoming) -> Outcome | None:
    """What this callback's own earlier processing of `event` did, if the history has it: a
    replayed callback keeps its answer (an `applied` one does not turn `duplicate`), and its
    history entry is the one it has (CONTRACT §3: one entry per callback, whatever its outcome).
    """
    if event.callback_id is None:
        return None
    outcomes = session.execute(
        select(OrderEvent.outcome).where(
            OrderEvent.order_id == order.id,
            OrderEvent.callback_id == event.callback_id,
            OrderEvent.event_id == event.event_id,
        )
    ).scalars().all()
    return strongest([Outcome(o) for o in outcomes]) if outcomes else None


def _repayment_status(session: Session, order: Order, event: Incoming) -> Status:
    """The status of the static-VA repayment `event` is about: the last one applied to it
    (the history keeps each event's id, the repayment's), or `pending` if it is news."""
    status = session.execute(
        select(OrderEvent.status)
        .where(
            OrderEvent.order_id == order.id,
            OrderEvent.event_id == event.event_id,
            OrderEvent.outcome == Outcome.APPLIED.value,
        )
        .order_by(OrderEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return Status.PENDING if status is None else Status(status)


def _lock_order(session: Session, event: Incoming, now: datetime) -> tuple[Order, bool]:
    """The order row, locked; created (unregistered) if the merchant never told us of it."""
    order = _select_locked(session, event)
    if order is not None:  # the common case: one round trip
        return order, False
    currency = (event.currency or "XXX").upper()
    amount = to_minor(event.amount, currency) if event.amount is not None else 0
    created_id = insert_ignore(
        session,
        Order.__table__,  # type: ignore[arg-type]
        {
            "provider": event.provider,
            "account": event.account,
            "merchant_order_no": event.merchant_order_no,
            "provider_order_no": event.provider_order_no,
            "kind": (event.kind or Kind.PAYMENT).value,
            "status": Status.PENDING.value,
            "amount_minor": amount,
            "paid_minor": 0,
            "currency": currency,
            "needs_review": False,
            "review_reasons": "[]",
            "registered": False,
            "created_at": now,
            "updated_at": now,
            "next_poll_at": event.poll_after,
        },
    )
    # Another transaction may have created it between our select and insert: select again.
    order = _select_locked(session, event)
    assert order is not None
    return order, created_id is not None


def _select_locked(session: Session, event: Incoming) -> Order | None:
    return session.execute(
        select(Order)
        .where(
            Order.provider == event.provider,
            Order.account == event.account,
            Order.merchant_order_no == event.merchant_order_no,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def flag_order(order: Order, flags: list[str]) -> None:
    """Add each of `flags` to the order's review reasons (once) and mark it for review."""
    if not flags:
        return
    reasons: list[str] = json.loads(order.review_reasons)
    for flag in flags:
        if flag not in reasons:
            reasons.append(flag)
    order.review_reasons = json.dumps(reasons)
    order.needs_review = True


def _history(
    session: Session, order: Order, event: Incoming, outcome: Outcome, now: datetime
) -> None:
    session.execute(
        insert(_ORDER_EVENTS),
        {
            "order_id": order.id,
            "at": now,
            "source": event.source,
            "callback_id": event.callback_id,
            "provider_status": event.provider_status,
            "status": event.status.value,
            "outcome": outcome.value,
            "event_id": event.event_id,
        },
    )

