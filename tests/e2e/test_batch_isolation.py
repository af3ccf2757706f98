"""A batch shares one transaction, yet each callback ends in its own state: a poison callback
(one the ledger cannot hold, a query that breaks) fails alone, and a batch processed twice
changes nothing the second time."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy.orm import Session

import ledger.booking
from ledger.apply import Incoming
from ledger.models import Order
from providers.base import HttpRequest
from tests.conftest import unique
from tests.e2e.conftest import TASK
from tests.harness import Stack, store
from workers.process import process_batch
from workers.runtime import Runtime


@pytest.mark.parametrize(
    ("order_no", "amount", "reason"),
    [
        ("", "5.001", "bad_amount"),
        ("", "100000000000000000000.00", "bad_amount"),
        ("M" * 129, "5.00", "malformed"),
        ("M\x00NUL", "5.00", "malformed"),
    ],
    ids=["finer_than_cents", "beyond_bigint", "order_no_too_long", "order_no_with_nul"],
)
def test_poison_callback_does_not_fail_its_neighbours(
    stack: Stack, runtime: Runtime, order_no: str, amount: str, reason: str
) -> None:
    """A callback the ledger cannot hold (an amount finer than the currency's unit or beyond
    what it can hold, an order number wider than its column or with a character PostgreSQL's
    text refuses) is rejected alone, at once; the rest of its batch applies."""
    world = stack.world
    good = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
            for _ in range(4)]
    poison_fields = world.fields("opay", order_no or unique(), "succeeded", "5.00")
    poison = world.callback("opay", {**poison_fields, "amount": amount})
    ids = store(runtime.engine, [good[0], good[1], poison, *good[2:]])
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 4, "rejected": 1}
    assert result.reasons[f"rejected|{reason}"] == 1
    records = [stack.callback(i) for i in ids]
    assert [r["state"] for r in records] == ["applied", "applied", "rejected", "applied",
                                             "applied"]


@pytest.mark.parametrize("order_no", ["M\x00NUL", "M\ud800"], ids=["nul", "lone_surrogate"])
def test_an_unsigned_claim_with_an_unstorable_order_number_is_rejected_before_any_query(
    stack: Stack, runtime: Runtime, order_no: str
) -> None:
    """Anyone can post an unsigned OPay callback. One whose order number holds a character
    PostgreSQL's text refuses (or UTF-8 cannot encode) is `malformed` at once: before, building
    its query raised, or writing its row did, and its whole batch came back at every sweep."""
    world = stack.world
    good = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
            for _ in range(2)]
    body = json.dumps({"data": {"outOrderNo": order_no, "orderNo": "X1", "payNo": "P1",
                                "status": "SUCCESS", "amount": "5.00", "currency": "NGN"}})
    claim = HttpRequest("POST", "/callbacks/opay", {"Content-Type": "application/json",
                                                    "X-Opay-Tranid": "T1"}, body.encode())
    ids = store(runtime.engine, [good[0], claim, good[1]])
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 2, "rejected": 1}
    assert result.reasons["rejected|malformed"] == 1
    assert [stack.callback(i)["state"] for i in ids] == ["applied", "rejected", "applied"]
    # Nothing was asked of the provider (the session's other callbacks may be, meanwhile).
    assert not [key for key in stack.world.queries if key[1] in (order_no, "X1")]


def test_an_order_created_by_a_rolled_back_callback_is_created_again(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing callback is the first news of its order, so its savepoint creates the order
    before failing (an injected fault while moving the money) and rolls back. A good callback
    for the same order later in the batch must not reuse the vanished row: it creates the order
    anew and applies."""
    world = stack.world
    order_no = unique()
    fields = world.fields("opay", order_no, "succeeded", "5.00")
    ids = store(runtime.engine, [world.callback("opay", fields), world.callback("opay", fields)])
    move_money = ledger.booking.move_money

    def fail_for_the_first(session: Session, order: Order, event: Incoming, now: datetime,
                           ) -> list[str]:
        if event.callback_id == ids[0]:
            raise RuntimeError("injected fault after the order was created")
        return move_money(session, order, event, now)

    monkeypatch.setattr(ledger.booking, "move_money", fail_for_the_first)
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 1, "processing": 1}
    assert [stack.callback(i)["state"] for i in ids] == ["processing", "applied"]
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert len(order["payments"]) == 1


def test_a_batch_processed_twice_changes_nothing(stack: Stack, runtime: Runtime) -> None:
    """A redelivered batch finds its callbacks final and leaves them (and the ledger) alone."""
    world = stack.world
    order_no = unique()
    ids = store(runtime.engine, [world.callback("otgpay",
                                         world.fields("otgpay", order_no, "succeeded", "9.00"))])
    assert process_batch(runtime, ids, TASK).states == {"applied": 1}
    assert process_batch(runtime, ids, TASK).states == {}
    order = stack.order("otgpay", order_no)
    assert order is not None
    assert len(order["history"]) == 1
    assert len(order["payments"]) == 1


def test_a_query_that_breaks_fails_its_own_callback_not_the_batch(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirming query that raises something other than a query error (an adapter bug) is
    that callback's transient failure: it waits for its retry, and its batch applies."""
    world = stack.world
    claims = []
    for _ in range(2):
        fields = world.fields("mtpay", unique(), "succeeded", "5.00")
        world.publish("mtpay", fields)  # what the provider's query answers
        claims.append(world.callback("mtpay", fields))
    signed = world.callback("otgpay", world.fields("otgpay", unique(), "succeeded", "5.00"))
    ids = store(runtime.engine, [claims[0], signed, claims[1]])
    provider = runtime.accounts.get("mtpay", "default")
    assert provider is not None
    query = type(provider.provider).query
    calls: list[str] = []

    async def breaks_once(self: object, *args: object) -> object:
        calls.append("query")
        if len(calls) == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return await query(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(type(provider.provider), "query", breaks_once)
    result = process_batch(runtime, ids, TASK)
    assert result.split == []
    assert result.states == {"applied": 2, "processing": 1}
    assert result.reasons["processing|query:UnicodeEncodeError"] == 1
    assert [stack.callback(i)["state"] for i in ids].count("applied") == 2
