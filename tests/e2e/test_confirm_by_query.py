"""Claims confirmed by a status query through the real stack: the queried status is what applies,
a claim the provider does not know yet waits, one it never knows ends unconfirmed, and an answer
about another order confirms nothing."""

from __future__ import annotations

from tests.conftest import unique
from tests.e2e.posting import post
from tests.harness import Stack, wait_for


def test_mtpay_claim_is_checked_against_the_query(stack: Stack) -> None:
    """An MTPay callback claiming SUCCESS while the query says PENDING leaves it pending."""
    order_no = unique()
    stack.register("mtpay", order_no, "100.00")
    claim = stack.world.fields("mtpay", order_no, "succeeded", "100.00", event_id=f"MT-{order_no}")
    stack.world.publish("mtpay", stack.world.fields("mtpay", order_no, "pending", "100.00",
                                                    event_id=f"MT-{order_no}"))
    stack.wait_final([post(stack, "mtpay", claim)])
    order = stack.order("mtpay", order_no)
    assert order is not None
    assert order["status"] == "pending"
    assert order["payments"] == []
    assert stack.world.queries[("mtpay", order_no)] >= 1


def test_a_claim_the_status_api_does_not_know_yet_waits_for_it(stack: Stack) -> None:
    """The provider's status API lags its callbacks: the query about an unregistered order
    answers "not found" at first. Nothing else would ever poll that order, so the claim is
    tried again like a transient failure, and applies once the provider knows the order."""
    order_no = unique()
    claim = stack.world.fields("mtpay", order_no, "succeeded", "100.00")
    callback_id = post(stack, "mtpay", claim)

    def asked_in_vain() -> bool:
        record = stack.callback(callback_id)
        return record["attempts"] >= 1 and record["reason"] == "query:not_found"

    wait_for(asked_in_vain, 30, "a first query that finds nothing")
    assert stack.callback(callback_id)["state"] == "processing"
    stack.world.publish("mtpay", claim)
    [record] = stack.wait_final([callback_id])
    assert (record["state"], record["reason"]) == ("applied", None)
    assert record["attempts"] >= 2
    order = stack.order("mtpay", order_no)
    assert order is not None
    assert (order["status"], order["paid_amount"]) == ("succeeded", "100.00")


def test_a_claim_the_provider_never_knows_is_unconfirmed_after_the_last_attempt(
    stack: Stack,
) -> None:
    """A claim about an order the provider's status API never finds (a forged body under a
    replayed MTPay signature, say) ends `rejected` as `unconfirmed` once its attempts are
    spent, having moved nothing."""
    order_no = unique()
    claim = stack.world.fields("mtpay", order_no, "succeeded", "100.00")
    [record] = stack.wait_final([post(stack, "mtpay", claim)])
    assert (record["state"], record["reason"], record["attempts"]) == (
        "rejected", "unconfirmed", 3)
    assert stack.world.queries[("mtpay", order_no)] == 3
    assert stack.order("mtpay", order_no) is None


def test_mtpay_answer_about_another_order_confirms_nothing(stack: Stack) -> None:
    """The query about the claimed order answers with another order's success (a provider
    mixing up its records): the claim is rejected as `wrong_order_in_reply`, and neither
    order moves."""
    claimed_no, other_no = unique(), unique()
    for number in (claimed_no, other_no):
        stack.register("mtpay", number, "100.00")
    stack.world.publish("mtpay", stack.world.fields("mtpay", other_no, "succeeded", "100.00"))
    stack.world.misfiled[("mtpay", claimed_no)] = other_no
    try:
        claim = stack.world.fields("mtpay", claimed_no, "succeeded", "100.00")
        [record] = stack.wait_final([post(stack, "mtpay", claim)])
    finally:
        del stack.world.misfiled[("mtpay", claimed_no)]
    assert (record["state"], record["reason"]) == ("rejected", "wrong_order_in_reply")
    for number in (claimed_no, other_no):
        order = stack.order("mtpay", number)
        assert order is not None
        assert (order["status"], order["payments"], order["history"]) == ("pending", [], [])
