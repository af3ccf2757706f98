"""Order registration through the API: repeats, the default account, and a registration that
comes after a callback already paid the order."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from payhook.accounts import load_accounts
from tests.conftest import unique
from tests.e2e.receiver import own_receiver
from tests.harness import API_TOKEN, Stack


def test_order_registration_repeats(stack: Stack) -> None:
    """Registering: 201 new, 200 identical repeat, 409 when a field differs, 400 when invalid."""
    order = {"provider": "opay", "merchant_order_no": unique(), "kind": "payment",
             "amount": "12.50", "currency": "NGN", "customer_phone": "2348000000000"}
    assert stack.api("POST", "/api/orders", order)[0] == 201
    assert stack.api("POST", "/api/orders", {**order, "customer_phone": "1"})[0] == 200
    assert stack.api("POST", "/api/orders", {**order, "amount": "12.51"})[0] == 409
    assert stack.api("POST", "/api/orders", {**order, "amount": "1.001"})[0] == 400
    assert stack.api("POST", "/api/orders", {**order, "provider": "nopay"})[0] == 400
    status, body = stack.api("GET", f"/api/orders/opay/{order['merchant_order_no']}")
    assert (status, body["amount"], body["status"]) == (200, "12.50", "pending")
    assert stack.api("GET", "/api/orders/opay/NOPE")[0] == 404


def test_an_order_lookup_without_an_account_is_the_default_accounts(
    stack: Stack, database_url: str, redis_url: str,
) -> None:
    """GET /api/orders/{provider}/{no} without `?account=` answers for the `default` account
    (CONTRACT §2), never another account's order of the same number."""
    stacked = load_accounts(stack.workdir / "payhook.toml")
    opay = stacked.get("opay")
    assert opay is not None
    second = replace(opay, name="second")
    accounts = replace(stacked, by_key={**stacked.by_key, ("opay", "second"): second})
    number, headers = unique(), {"Authorization": f"Bearer {API_TOKEN}"}
    order = {"provider": "opay", "account": "second", "merchant_order_no": number,
             "kind": "payment", "amount": "7.00", "currency": "NGN"}

    async def run() -> list[tuple[int, str | None]]:
        answers: list[tuple[int, str | None]] = []
        async with own_receiver(stack, database_url, redis_url, API_TOKEN, accounts) as (
                _, client):

            async def lookup(query: str) -> None:
                reply = await client.get(f"/api/orders/opay/{number}{query}", headers=headers)
                body = await reply.json()
                answers.append((reply.status, body.get("account")))

            assert (await client.post("/api/orders", json=order, headers=headers)).status == 201
            for query in ("", "?account=", "?account=second"):
                await lookup(query)
            default = {**order, "account": "default", "amount": "9.00"}
            assert (await client.post("/api/orders", json=default, headers=headers)).status == 201
            for query in ("", "?account=second", "?account=nope"):
                await lookup(query)
        return answers

    assert asyncio.run(run()) == [
        (404, None), (404, None), (200, "second"),
        (200, "default"), (200, "second"), (404, None),
    ]


def test_a_repeat_registration_is_still_identical_after_a_callback(stack: Stack) -> None:
    """A callback fills in the provider's order number the registration left out; the
    merchant's retry of the same registration is still an identical repeat (200), and one
    that names another provider order number is a conflict (409)."""
    number = unique()
    order = {"provider": "opay", "merchant_order_no": number, "kind": "payment",
             "amount": "12.50", "currency": "NGN"}
    assert stack.api("POST", "/api/orders", order)[0] == 201
    fields = stack.world.fields("opay", number, "succeeded", "12.50")
    _, _, callback_id = stack.post(stack.world.callback("opay", fields))
    assert stack.wait_final([callback_id])[0]["state"] == "applied"
    status, body = stack.api("GET", f"/api/orders/opay/{number}")
    assert (status, body["provider_order_no"]) == (200, fields["orderNo"])
    assert stack.api("POST", "/api/orders", order)[0] == 200
    assert stack.api("POST", "/api/orders", {**order, "provider_order_no": fields["orderNo"]})[
        0] == 200
    assert stack.api("POST", "/api/orders", {**order, "provider_order_no": "OTHER"})[0] == 409


@pytest.mark.parametrize(("registered", "paid", "reasons"), [
    ("300.00", "100.00", ["unregistered_order", "amount_mismatch"]),
    ("100.00", "100.00", ["unregistered_order"]),
])
def test_registering_an_order_a_callback_paid_first_checks_what_was_paid(
    stack: Stack, registered: str, paid: str, reasons: list[str]
) -> None:
    """A payment that arrived before the merchant registered its order is held against the
    registration as it would have been on arrival: another amount flags `amount_mismatch`."""
    number = unique()
    fields = stack.world.fields("opay", number, "succeeded", paid)
    _, _, callback_id = stack.post(stack.world.callback("opay", fields))
    assert stack.wait_final([callback_id])[0]["state"] == "applied"
    order = {"provider": "opay", "merchant_order_no": number, "kind": "payment",
             "amount": registered, "currency": "NGN"}
    assert stack.api("POST", "/api/orders", order)[0] == 201
    assert stack.api("POST", "/api/orders", order)[0] == 200
    status, body = stack.api("GET", f"/api/orders/opay/{number}")
    assert status == 200
    assert (body["amount"], body["paid_amount"], body["status"]) == (registered, paid,
                                                                     "succeeded")
    assert (body["review_reasons"], body["needs_review"]) == (reasons, True)
