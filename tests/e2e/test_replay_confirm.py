"""Replaying a confirm-by-query callback through the real stack after the provider forgot the
order it confirmed: the callback's record stays true to the ledger."""

from __future__ import annotations

from typing import Any

from tests.conftest import unique
from tests.e2e.posting import post
from tests.harness import Stack

# A currency no other test's orders use: the balances in it are this test's order's alone,
# whatever the session's worker is still processing for other tests.
CURRENCY = "HKD"


def _balances(stack: Stack) -> list[dict[str, Any]]:
    status, body = stack.api("GET", "/api/ledger/balances")
    assert status == 200
    return [b for b in body["balances"] if b["currency"] == CURRENCY]


def test_a_replayed_callback_the_provider_forgot_keeps_its_outcome_not_unconfirmed(
    stack: Stack,
) -> None:
    """An MTPay callback applied when MTPay confirmed its order is replayed through the API
    after MTPay forgot the order (purged, or a sandbox restarted): it ends `applied` again, with
    the reason `confirmed_before`, on its first attempt, the order keeps its one history entry and
    the balances do not move. It used to ask in vain until its attempts were spent and end
    `rejected: unconfirmed`, though the ledger holds its event and its money."""
    order_no = unique("RPL")
    fields = stack.world.fields("mtpay", order_no, "succeeded", "100.00",
                                fiatCurrency=CURRENCY)
    stack.world.publish("mtpay", fields)
    callback_id = post(stack, "mtpay", fields)
    [record] = stack.wait_final([callback_id])
    assert (record["state"], record["reason"]) == ("applied", None)
    booked = _balances(stack)
    assert booked  # the clearing and receipts legs of its payment

    stack.world.forget("mtpay", order_no)
    status, _body = stack.api("POST", f"/api/callbacks/{callback_id}/replay")
    assert status == 202
    [record] = stack.wait_final([callback_id])
    assert (record["state"], record["reason"], record["attempts"]) == (
        "applied", "confirmed_before", 1)
    assert stack.world.queries[("mtpay", order_no)] == 2
    order = stack.order("mtpay", order_no)
    assert order is not None
    assert [(h["callback_id"], h["outcome"]) for h in order["history"]] == [
        (callback_id, "applied")]
    assert (order["status"], order["paid_amount"], len(order["payments"])) == (
        "succeeded", "100.00", 1)
    assert _balances(stack) == booked
