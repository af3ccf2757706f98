"""What the API cannot do, it says plainly: bad input gets its 4xx with a JSON error, and a
reconcile request the broker cannot take fails without a 500."""

from __future__ import annotations

import asyncio
import json

import pytest

from payhook.embedded import free_port
from tests.conftest import unique
from tests.e2e.receiver import own_receiver
from tests.harness import API_TOKEN, Stack, http

ORDER = {"provider": "opay", "merchant_order_no": "API-BAD", "kind": "payment",
         "amount": "3.00", "currency": "NGN"}
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), [
    ("GET", "/api/callbacks/99999999999999999999", None, {}, 404),
    ("GET", "/api/callbacks/0", None, {}, 404),
    ("GET", "/api/callbacks/abc", None, {}, 404),
    ("POST", "/api/callbacks/9223372036854775808/replay", None, {}, 404),
    ("GET", "/api/reconcile/runs/99999999999999999999", None, {}, 404),
    ("POST", "/api/orders", {**ORDER, "amount": "1e30"}, JSON_TYPE, 400),
    ("POST", "/api/orders", ORDER, {"Content-Type": "application/json; charset=bogus"}, 201),
    ("POST", "/api/orders", b"\xff{}", JSON_TYPE, 400),
    ("POST", "/api/reconcile", b"[]", JSON_TYPE, 400),
    ("POST", "/api/reconcile", b'"x"', JSON_TYPE, 400),
    ("POST", "/api/reconcile", {"provider": {"a": 1}}, JSON_TYPE, 400),
    ("POST", "/api/reconcile", {"provder": "opay"}, JSON_TYPE, 400),
    ("POST", "/api/reconcile", b"{}", {"Content-Type": "application/json; charset=bogus"}, 202),
    ("POST", "/api/orders", b"[" * 50_000, JSON_TYPE, 400),
    ("POST", "/api/reconcile", b"[" * 50_000, JSON_TYPE, 400),
    ("POST", "/api/orders", {**ORDER, "amount": "1e999999999"}, JSON_TYPE, 400),
    ("POST", "/api/orders", json.dumps({**ORDER, "merchant_order_no": "A\u0000B"}).encode(),
     JSON_TYPE, 400),
    ("POST", "/api/orders", json.dumps({**ORDER, "merchant_order_no": "A\ud800"}).encode(),
     JSON_TYPE, 400),
    ("POST", "/api/orders", json.dumps({**ORDER, "provider_order_no": "P\u0000"}).encode(),
     JSON_TYPE, 400),
])
def test_api_answers_bad_input_with_a_client_error(
    stack: Stack, method: str, path: str, body: object, headers: dict[str, str], status: int,
) -> None:
    """Ids no row can have, amounts no ledger can hold (however large their exponent), bodies
    of the wrong shape or charset or nested deeper than a parser recurses, strings PostgreSQL's
    text refuses: each gets its 4xx with a JSON error (or is read as the UTF-8 that JSON is),
    never a 500."""
    if isinstance(body, dict) and "merchant_order_no" in body:  # a new order each run
        body = {**body, "merchant_order_no": unique()}
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    got, reply = http(method, stack.url + path, body=raw,
                      headers={"Authorization": f"Bearer {API_TOKEN}", **headers})
    assert got == status, reply[:300]
    if status >= 400:
        assert json.loads(reply)["error"], reply[:300]


def test_a_reconcile_request_the_broker_cannot_take_fails_plainly(
    stack: Stack, database_url: str
) -> None:
    """With the broker out of reach, POST /api/reconcile answers 503 and its run is `failed`
    with the reason: never a 500, nor a run that stays `queued` for ever."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"

    async def run() -> tuple[int, dict[str, object], dict[str, object]]:
        async with own_receiver(stack, database_url, dead_broker, API_TOKEN) as (_, client):
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            posted = await client.post("/api/reconcile", headers=auth)
            body = await posted.json()
            stored = await (await client.get(f"/api/reconcile/runs/{body['id']}",
                                             headers=auth)).json()
        return posted.status, body, stored

    status, body, stored = asyncio.run(run())
    assert (status, body["state"]) == (503, "failed")
    assert (stored["state"], stored["report"]) == ("failed", {"error": "broker unavailable"})
