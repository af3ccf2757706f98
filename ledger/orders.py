"""Registering expected orders (the merchant tells us before the provider does)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.apply import flag_order
from ledger.booking import amount_differs, paid_in, payment_currencies
from ledger.db import insert_ignore
from ledger.late_registration import rebook_kind, reopen_repayments
from ledger.models import Order
from ledger.status import Kind, Status


class OrderConflict(Exception):
    """Raised when a repeat registration differs from the stored order (HTTP 409)."""


@dataclass(frozen=True)
class OrderSpec:
    """A validated registration request; `amount_minor` already in the currency's minor units."""

    provider: str
    account: str
    merchant_order_no: str
    kind: Kind
    amount_minor: int
    currency: str
    provider_order_no: str | None = None
    customer_phone: str | None = None
    next_poll_at: datetime | None = None  # first status query if no callback comes first


def register_order(session: Session, spec: OrderSpec, now: datetime) -> tuple[Order, bool]:
    """Create the order, or accept an identical repeat; True when created (or first registered)."""
    values = {
        "provider": spec.provider,
        "account": spec.account,
        "merchant_order_no": spec.merchant_order_no,
        "provider_order_no": spec.provider_order_no,
        "kind": spec.kind.value,
        "status": Status.PENDING.value,
        "amount_minor": spec.amount_minor,
        "paid_minor": 0,
        "currency": spec.currency,
        "customer_phone": spec.customer_phone,
        "needs_review": False,
        "review_reasons": "[]",
        "registered": True,
        "provider_order_no_registered": spec.provider_order_no is not None,
        "created_at": now,
        "updated_at": now,
        "next_poll_at": spec.next_poll_at,
    }
    created = insert_ignore(session, Order.__table__, values) is not None  # type: ignore[arg-type]
    order = session.execute(
        select(Order)
        .where(
            Order.provider == spec.provider,
            Order.account == spec.account,
            Order.merchant_order_no == spec.merchant_order_no,
        )
        .with_for_update()
    ).scalar_one()
    if created:
        return order, True
    if not order.registered:
        # The provider's order number came with its callback: a registration naming another
        # contradicts the provider, and is refused before anything changes.
        numbers = (spec.provider_order_no, order.provider_order_no)
        if None not in numbers and numbers[0] != numbers[1]:
            raise OrderConflict(spec.merchant_order_no)
        _register_late(session, order, spec, now)
        return order, True
    stored = (order.kind, order.amount_minor, order.currency)
    asked = (spec.kind.value, spec.amount_minor, spec.currency)
    # A callback fills in the provider's order number when the registration left it out: a
    # repeat that leaves it out again is the same request, whatever was filled in since. One
    # the registration named is part of the request: leaving it out differs.
    same_number = spec.provider_order_no == order.provider_order_no or (
        spec.provider_order_no is None and not order.provider_order_no_registered)
    if stored != asked or not same_number:
        raise OrderConflict(spec.merchant_order_no)
    return order, False


def _register_late(session: Session, order: Order, spec: OrderSpec, now: datetime) -> None:
    """A callback got here first; the merchant's registration fills in what it expected, what
    was booked is put in the registered kind's terms, and what was paid already is held
    against it, as it would have been on arrival."""
    order.registered = True
    order.provider_order_no_registered = spec.provider_order_no is not None
    order.provider_order_no = order.provider_order_no or spec.provider_order_no
    flags = rebook_kind(session, order, spec.kind, now)
    order.amount_minor, order.customer_phone = spec.amount_minor, spec.customer_phone
    # What was paid is counted in the registered currency only (a payment in another one
    # stays listed in its own, and flagged).
    order.currency = spec.currency
    order.paid_minor = paid_in(session, order, spec.currency)
    flags += _paid_differs(session, order, spec)
    if spec.kind is Kind.STATIC_VA:
        # A static VA stays open, and what was paid into it is the sum of its repayments. Those
        # that arrived while the order looked like a payment were duplicates, not booked: they
        # are applied by the next poll, due now, or a replay of their callbacks.
        order.status = Status.PENDING.value
        order.next_poll_at = now if reopen_repayments(session, order) else None
    flag_order(order, flags)
    order.updated_at = now


def _paid_differs(session: Session, order: Order, spec: OrderSpec) -> list[str]:
    """The review reasons payments booked before the registration call for: another currency,
    or another amount than registered (unless the provider's status said so already, or the
    order is an open static VA, or the registration has no amount)."""
    flags = []
    if any(c != spec.currency for c in payment_currencies(session, order.id).values()):
        flags.append("currency_mismatch")
    reasons = json.loads(order.review_reasons)
    if (spec.kind is not Kind.STATIC_VA and order.paid_minor
            and amount_differs(order.paid_minor, spec.amount_minor, reasons)):
        flags.append("amount_mismatch")
    return flags
