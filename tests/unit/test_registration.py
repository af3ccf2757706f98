"""Registrations that come after the callbacks, on the real database: the money booked is put in
the registered kind's accounts, and a static VA's early repayments are each credited once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ledger.apply import Incoming
from ledger.models import Journal, Payment
from ledger.status import Kind, Status
from tests.unit.ledger_db import Ledger, event, ledger, number

__all__ = ["ledger"]

CLEARING, RECEIPTS = "clearing:opay/default", "receipts:opay/default"
PAYOUTS = "payouts:opay/default"


def test_a_payout_registered_after_its_success_is_rebooked_as_one(ledger: Ledger) -> None:
    """A payout's success callback creates a payment (no kind in it) booked as money in; the
    registration as a payout reverses that and books it out, once, and flags `kind_changed`;
    a repeat registration changes nothing more."""
    no = number()
    ledger.apply(event(no, no + "T"))
    assert ledger.legs(no) == {(CLEARING, "NGN"): 30000, (RECEIPTS, "NGN"): -30000}
    assert ledger.register(no, kind=Kind.PAYOUT) is True
    expected = {(PAYOUTS, "NGN"): 30000, (CLEARING, "NGN"): -30000}
    assert ledger.legs(no) == expected
    order = ledger.order(no)
    assert (order.kind, order.status, order.paid_minor) == ("payout", "succeeded", 30000)
    assert json.loads(order.review_reasons) == ["unregistered_order", "kind_changed"]
    assert (ledger.count(no, Journal), ledger.count(no, Payment)) == (3, 1)
    assert ledger.register(no, kind=Kind.PAYOUT) is False  # the API's 200
    assert ledger.legs(no) == expected
    assert ledger.count(no, Journal) == 3
    assert json.loads(ledger.order(no).review_reasons) == ["unregistered_order", "kind_changed"]


def test_a_payment_registered_after_a_payout_callback_is_rebooked_as_one(ledger: Ledger) -> None:
    """The reverse: a callback that named a payout (OTGPAY's `payout.*`) created the order; the
    merchant registers a payment, and the money is booked in, flagged `kind_changed`."""
    no = number()
    ledger.apply(event(no, no + "T", kind=Kind.PAYOUT))
    assert ledger.legs(no) == {(PAYOUTS, "NGN"): 30000, (CLEARING, "NGN"): -30000}
    ledger.register(no, kind=Kind.PAYMENT)
    assert ledger.legs(no) == {(CLEARING, "NGN"): 30000, (RECEIPTS, "NGN"): -30000}
    assert json.loads(ledger.order(no).review_reasons) == ["unregistered_order", "kind_changed"]


def test_a_kind_change_with_nothing_booked_moves_nothing(ledger: Ledger) -> None:
    """A failed payment registered as a payout, or a paid one registered as a static VA (money
    in either way): no journal is written and no `kind_changed` flag raised."""
    failed, paid = number(), number()
    ledger.apply(event(failed, failed + "T", Status.FAILED))
    ledger.register(failed, kind=Kind.PAYOUT)
    ledger.apply(event(paid, paid + "T", currency="IDR"))
    ledger.register(paid, kind=Kind.STATIC_VA, amount=0, currency="IDR")
    assert ledger.count(failed, Journal) == 0
    assert ledger.count(paid, Journal) == 1
    assert json.loads(ledger.order(failed).review_reasons) == ["unregistered_order"]
    assert json.loads(ledger.order(paid).review_reasons) == ["unregistered_order"]


def test_a_payout_registered_as_a_static_va_becomes_a_repayment(ledger: Ledger) -> None:
    """A success booked as a payout, registered as a static VA: rebooked as money in, counted
    in the VA's paid amount, the VA open, and flagged."""
    no = number()
    ledger.apply(event(no, no + "R1", currency="IDR", kind=Kind.PAYOUT))
    ledger.register(no, kind=Kind.STATIC_VA, amount=0, currency="IDR")
    assert ledger.legs(no) == {(CLEARING, "IDR"): 30000, (RECEIPTS, "IDR"): -30000}
    order = ledger.order(no)
    assert (order.status, order.paid_minor) == ("pending", 30000)
    assert json.loads(order.review_reasons) == ["unregistered_order", "kind_changed"]


def _repayment(no: str, r: str, source: str = "callback", **extra: Any) -> Incoming:
    return event(no, no + r, amount="10000", currency="IDR", source=source, **extra)


def test_static_va_repayments_before_registration_are_each_credited_once(
    ledger: Ledger,
) -> None:
    """R1 and R2 arrive before the VA is registered (R2 a duplicate of a "payment"); the
    registration makes the VA due for a poll now, and the poll listing both credits R2:
    paid is their sum, both listed; replaying R2's callback or polling again books nothing."""
    no = number("VA")
    first = [ledger.apply(_repayment(no, r, callback_id=cb)).outcome.value
             for r, cb in (("R1", 1), ("R2", 2))]
    assert first == ["applied", "duplicate"]
    before = datetime.now(UTC)
    ledger.register(no, kind=Kind.STATIC_VA, amount=0, currency="IDR")
    after = datetime.now(UTC)
    order = ledger.order(no)
    assert (order.status, order.paid_minor) == ("pending", 1000000)
    assert order.next_poll_at is not None
    assert before <= order.next_poll_at <= after  # due at the next pass
    polled = [ledger.apply(_repayment(no, r, "poll")).outcome.value
              for r in ("R1", "R2")]
    assert polled == ["duplicate", "applied"]
    again = [ledger.apply(_repayment(no, "R2", callback_id=2)).outcome.value,
             *(ledger.apply(_repayment(no, r, "poll")).outcome.value
               for r in ("R1", "R2"))]
    assert again == ["duplicate", "duplicate", "duplicate"]
    body = ledger.json(no)
    assert (body["status"], body["paid_amount"]) == ("pending", "20000.00")
    assert sorted(p["provider_txn_id"] for p in body["payments"]) == [no + "R1", no + "R2"]
    assert ledger.legs(no) == {(CLEARING, "IDR"): 2000000, (RECEIPTS, "IDR"): -2000000}


def test_a_replay_after_registration_credits_an_early_repayment_once(ledger: Ledger) -> None:
    """The other way in: R2's callback replayed after the registration credits it, keeping
    one history entry per outcome; a later poll listing it books nothing more."""
    no = number("VA")
    for r, cb in (("R1", 1), ("R2", 2)):
        ledger.apply(_repayment(no, r, callback_id=cb))
    ledger.register(no, kind=Kind.STATIC_VA, amount=0, currency="IDR")
    replayed = ledger.apply(_repayment(no, "R2", callback_id=2))
    polled = ledger.apply(_repayment(no, "R2", "poll"))
    assert (replayed.outcome.value, polled.outcome.value) == ("applied", "duplicate")
    assert (ledger.order(no).paid_minor, ledger.count(no, Payment)) == (2000000, 2)
