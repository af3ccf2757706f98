"""OPay through the whole pipeline: acks, dedupe, the status rules, rejections, bad bodies."""

from __future__ import annotations

import base64
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from ledger.models import Journal, Order
from payhook.masking import mask_text
from sandbox.wire import opay as wire
from tests.conftest import unique
from tests.harness import Stack, exchange

OPAY_ACK = b'{"code":"00000","message":"SUCCESSFUL"}'


def send(stack: Stack, order_no: str, status: str, amount: str = "300.00",
         **kwargs: Any) -> int:
    """Post one signed OPay callback; its stored id (asserting the exact ack)."""
    fields = stack.world.fields("opay", order_no, status, amount,
                                event_id=kwargs.pop("event_id", None))
    code, body, callback_id = stack.post(stack.world.callback("opay", fields, **kwargs))
    assert (code, body) == (200, OPAY_ACK)
    assert callback_id is not None
    return callback_id


def journal_count(database_url: str, order_no: str) -> int:
    """How many balanced posting sets the ledger holds for the order."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count(Journal.id)).join(Order, Order.id == Journal.order_id)
            .where(Order.merchant_order_no == order_no)
        ).scalar_one()
    engine.dispose()
    return int(count)


def test_five_simultaneous_duplicates_apply_once(stack: Stack, database_url: str) -> None:
    """The same callback delivered five times at once is applied once and credited once."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    request = stack.world.callback("opay", fields)
    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(lambda _: stack.post(request), range(5)))
    assert all((code, body) == (200, OPAY_ACK) for code, body, _ in replies)
    records = stack.wait_final([cid for _, _, cid in replies if cid is not None])
    assert sorted(r["state"] for r in records) == ["applied"] + ["duplicate"] * 4
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert len(order["payments"]) == 1
    assert journal_count(database_url, order_no) == 1


def test_pending_after_success_is_stale(stack: Stack) -> None:
    """A pending that arrives after the success leaves the order succeeded (`stale`)."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    stack.wait_final([send(stack, order_no, "succeeded", event_id=f"T-{order_no}")])
    [late] = stack.wait_final([send(stack, order_no, "pending", event_id=f"T-{order_no}")])
    assert late["state"] == "stale"
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert [h["outcome"] for h in order["history"]] == ["applied", "stale"]


def test_fail_after_success_is_a_conflict(stack: Stack, database_url: str) -> None:
    """A failure after a success does not apply and flags `conflicting_status`."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    stack.wait_final([send(stack, order_no, "succeeded")])
    [late] = stack.wait_final([send(stack, order_no, "failed")])
    assert late["state"] == "conflict"
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert order["needs_review"] is True
    assert "conflicting_status" in order["review_reasons"]
    assert journal_count(database_url, order_no) == 1


def test_success_after_fail_applies_as_late_success(stack: Stack, database_url: str) -> None:
    """A success after a failure applies, credits once, and flags `late_success`."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    stack.wait_final([send(stack, order_no, "failed")])
    [late] = stack.wait_final([send(stack, order_no, "succeeded")])
    assert late["state"] == "applied"
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert order["review_reasons"] == ["late_success"]
    assert journal_count(database_url, order_no) == 1


def test_success_without_an_amount_books_the_registered_amount_for_review(
    stack: Stack, database_url: str
) -> None:
    """A signed success that states no amount: the registered amount is booked (the order did
    succeed), and the order is flagged `amount_missing`, since no message said what was paid."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    del fields["amount"]
    code, _, callback_id = stack.post(stack.world.callback("opay", fields))
    assert code == 200
    assert callback_id is not None
    [record] = stack.wait_final([callback_id])
    assert record["state"] == "applied"
    order = stack.order("opay", order_no)
    assert order is not None
    assert (order["status"], order["paid_amount"]) == ("succeeded", "300.00")
    assert order["needs_review"] is True
    assert order["review_reasons"] == ["amount_missing"]
    assert journal_count(database_url, order_no) == 1


def _forged(stack: Stack, order_no: str) -> tuple[Any, str]:
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    return stack.world.callback("opay", fields, forged=True), "bad_signature"


def _wrong_client_auth_key(stack: Stack, order_no: str) -> tuple[Any, str]:
    keys = replace(stack.world.opay, client_auth_key=secrets.token_hex(16))
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    return wire.encrypted_callback(keys, fields, now_ms), "bad_client_auth_key"


def _stale_timestamp(stack: Stack, order_no: str) -> tuple[Any, str]:
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp() * 1000)
    return stack.world.callback("opay", fields, timestamp_ms=old), "bad_timestamp"


def _undecryptable(stack: Stack, order_no: str) -> tuple[Any, str]:
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    request = stack.world.callback("opay", fields)
    import json

    body = json.loads(request.body)
    body["paramContent"] = base64.b64encode(os.urandom(128)).decode()
    body["sign"] = wire.sign(stack.world.opay.provider_private_key,
                             body["paramContent"] + body["timestamp"])
    return replace(request, body=json.dumps(body).encode()), "decrypt_failed"


@pytest.mark.parametrize(
    "make", [_forged, _wrong_client_auth_key, _stale_timestamp, _undecryptable],
    ids=["forged_signature", "wrong_client_auth_key", "stale_timestamp", "undecryptable"],
)
def test_bad_callbacks_are_stored_and_rejected(stack: Stack, make: Any) -> None:
    """A forged, foreign, stale or undecryptable callback is acked, stored, rejected with its
    reason, and the order is untouched."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    request, reason = make(stack, order_no)
    code, body, callback_id = stack.post(request)
    assert (code, body) == (200, OPAY_ACK)
    assert callback_id is not None
    [record] = stack.wait_final([callback_id])
    assert (record["state"], record["reason"]) == ("rejected", reason)
    # As received, but for what the API masks (the clientAuthKey and the signature).
    assert record["body"] == mask_text(request.body.decode())
    order = stack.order("opay", order_no)
    assert order is not None
    assert (order["status"], order["history"], order["payments"]) == ("pending", [], [])


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"\x00\xff\xfe" * 100, b"[1,2,3]", b'{"paramContent": 5}',
     b'{"data": {"outOrderNo": null}}', "{\"x\": \"\u20ac\"}".encode()],
    ids=["empty", "malformed", "binary", "array", "wrong_types", "plain_nulls", "unicode"],
)
def test_bad_bodies_are_acked_stored_and_rejected(stack: Stack, body: bytes) -> None:
    """Any body within the limit is stored and acknowledged, then rejected, never a 500."""
    code, reply, callback_id = exchange_post(stack, "/callbacks/opay", body)
    assert (code, reply) == (200, OPAY_ACK)
    assert callback_id is not None
    [record] = stack.wait_final([callback_id])
    assert record["state"] == "rejected"
    assert record["reason"]


def exchange_post(stack: Stack, path: str, body: bytes,
                  headers: dict[str, str] | None = None) -> tuple[int, bytes, int | None]:
    code, reply, reply_headers = exchange("POST", stack.url + path, body=body,
                                          headers=headers or {"Content-Type": "application/json"})
    callback_id = reply_headers.get("X-Payhook-Callback-Id")
    return code, reply, int(callback_id) if callback_id else None


def test_oversized_bodies_get_413(stack: Stack) -> None:
    """A body over the limit is refused with 413, declared or chunked."""
    big = b"x" * (65536 + 1)
    assert exchange_post(stack, "/callbacks/opay", big)[0] == 413

    def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 8192

    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - our own loopback URL
        stack.url + "/callbacks/opay", data=chunks(), method="POST",
        headers={"Transfer-Encoding": "chunked"})
    try:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
        status = 200
    except urllib.error.HTTPError as err:
        status = err.code
    assert status == 413


def test_unknown_routes_and_methods(stack: Stack) -> None:
    """Unknown provider or account is 404; GET on a callback route is 405."""
    assert exchange_post(stack, "/callbacks/nopay", b"{}")[0] == 404
    assert exchange_post(stack, "/callbacks/opay/nosuchaccount", b"{}")[0] == 404
    assert exchange("GET", stack.url + "/callbacks/opay")[0] == 405


def test_plain_callback_applies_only_what_the_query_says(stack: Stack) -> None:
    """The unsigned plain shape is a hint: the queried status is what gets applied."""
    order_no = unique()
    stack.register("opay", order_no, "150.00")
    claimed = stack.world.fields("opay", order_no, "succeeded", "150.00", event_id=f"P-{order_no}")
    stack.world.publish("opay", stack.world.fields("opay", order_no, "pending", "150.00",
                                                   event_id=f"P-{order_no}"))
    code, _, first = stack.post(stack.world.callback("opay", claimed, plain=True))
    assert code == 200
    assert first is not None
    stack.wait_final([first])
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "pending"
    stack.world.publish("opay", claimed)
    _, _, second = stack.post(stack.world.callback("opay", claimed, plain=True))
    assert second is not None
    stack.wait_final([second])
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert order["history"][-1]["provider_status"] == "SUCCESS"
