"""Every provider through the real stack: one contract suite, OTGPAY's flags and form bodies,
replays, and transient failures that end `dead`."""

from __future__ import annotations

import pytest

from tests.conftest import unique
from tests.e2e.posting import ACKS, post
from tests.harness import Stack

AMOUNT = {"opay": "300.00", "monetapay": "50000", "otgpay": "300.00", "mtpay": "100.00"}
PROVIDERS = list(ACKS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_contract_apply_duplicate_forged(stack: Stack, provider: str) -> None:
    """Exact ack; a success applies; its repeat is a duplicate; a forgery is rejected."""
    order_no = unique()
    stack.register(provider, order_no, AMOUNT[provider])
    fields = stack.world.fields(provider, order_no, "succeeded", AMOUNT[provider])
    stack.world.publish(provider, fields)  # what the status API says (MTPay confirms by it)
    [first] = stack.wait_final([post(stack, provider, fields)])
    [again] = stack.wait_final([post(stack, provider, fields)])
    [forged] = stack.wait_final([post(stack, provider, fields, forged=True)])
    assert first["state"] == "applied"
    assert again["state"] == "duplicate"
    assert (forged["state"], forged["reason"]) == ("rejected", "bad_signature")
    order = stack.order(provider, order_no)
    assert order is not None
    assert (order["status"], order["needs_review"]) == ("succeeded", False)
    assert len(order["payments"]) == 1
    assert [h["outcome"] for h in order["history"]] == ["applied", "duplicate"]


@pytest.mark.parametrize(("status", "amount", "flag"),
                         [("partial", "200.00", "partial_payment"),
                          ("overpaid", "400.00", "overpayment")])
def test_otgpay_partial_and_overpaid_are_flagged(
    stack: Stack, status: str, amount: str, flag: str,
) -> None:
    """OTGPAY status 4/5 applies as succeeded with the paid amount, flagged for review."""
    order_no = unique()
    stack.register("otgpay", order_no, "300.00")
    fields = stack.world.fields("otgpay", order_no, status, amount)
    [record] = stack.wait_final([post(stack, "otgpay", fields)])
    assert record["state"] == "applied"
    order = stack.order("otgpay", order_no)
    assert order is not None
    assert (order["status"], order["paid_amount"]) == ("succeeded", amount)
    assert order["review_reasons"] == [flag]


def test_otgpay_form_encoded_and_extra_fields(stack: Stack) -> None:
    """Form-encoded callbacks and unknown (signed) extra fields are accepted."""
    form_order, extra_order = unique(), unique()
    for number in (form_order, extra_order):
        stack.register("otgpay", number, "300.00")
    form = stack.world.fields("otgpay", form_order, "succeeded", "300.00")
    extra = stack.world.fields("otgpay", extra_order, "succeeded", "300.00",
                               bankCode="014", payType="VA", event="payment.completed")
    records = stack.wait_final([post(stack, "otgpay", form, form=True),
                                post(stack, "otgpay", extra)])
    assert [r["state"] for r in records] == ["applied", "applied"]
    for number in (form_order, extra_order):
        order = stack.order("otgpay", number)
        assert order is not None
        assert order["status"] == "succeeded"


def test_replaying_an_applied_callback_keeps_it_applied_and_books_nothing(stack: Stack) -> None:
    """A replay re-processes the raw bytes: the event is already in the ledger, so nothing is
    booked again, and the callback stays `applied` (it is the one that applied it), while a
    second delivery of the same event is still a `duplicate`; neither replay adds a history
    entry (one per callback)."""
    order_no = unique()
    stack.register("otgpay", order_no, "300.00")
    fields = stack.world.fields("otgpay", order_no, "succeeded", "300.00")
    first = post(stack, "otgpay", fields)
    assert stack.wait_final([first])[0]["state"] == "applied"
    again = post(stack, "otgpay", fields)
    assert stack.wait_final([again])[0]["state"] == "duplicate"
    for callback_id in (first, again):
        status, _ = stack.api("POST", f"/api/callbacks/{callback_id}/replay")
        assert status == 202
    replayed = stack.wait_final([first, again])
    assert [(r["state"], r["attempts"]) for r in replayed] == [("applied", 1), ("duplicate", 1)]
    order = stack.order("otgpay", order_no)
    assert order is not None
    assert len(order["payments"]) == 1
    assert [h["outcome"] for h in order["history"]] == ["applied", "duplicate"]


def test_transient_failures_end_dead_and_replay_applies(stack: Stack) -> None:
    """A provider that stays busy exhausts the retries (`dead`); a replay later applies it."""
    order_no = unique()
    stack.register("mtpay", order_no, "100.00")
    fields = stack.world.fields("mtpay", order_no, "succeeded", "100.00")
    stack.world.publish("mtpay", fields)
    stack.world.busy.add("mtpay")
    try:
        callback_id = post(stack, "mtpay", fields)
        [record] = stack.wait_final([callback_id], timeout=90)
    finally:
        stack.world.busy.discard("mtpay")
    assert record["state"] == "dead"
    assert record["attempts"] == 3
    assert "QueryTransient" in record["reason"]
    status, _ = stack.api("POST", f"/api/callbacks/{callback_id}/replay")
    assert status == 202
    [again] = stack.wait_final([callback_id])
    assert again["state"] == "applied"
    order = stack.order("mtpay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
