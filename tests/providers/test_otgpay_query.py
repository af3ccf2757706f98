"""OTGPAY status queries: the exact requests (collect and pay paths), reply vectors and error
codes, forged and unusable replies, the sandbox's bytes against the vectors, and round trips
through the platform's side of the wire."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from providers.base import HttpReply, HttpRequest, OrderKind, OrderRef, Status, Trust
from providers.errors import QueryAuth, QueryError, QueryNotFound, QueryPermanent, QueryTransient
from sandbox.wire import otgpay as wire
from tests.providers.otgpay_setup import (
    ACCOUNT,
    ADAPTER,
    CALLBACKS,
    DATA,
    FIELDS,
    KEYS,
    NOT_THE_PLATFORMS_KEY,
)

REPLIES = [q for q in DATA["queries"] if q["kind"] == "reply"]


def test_query_request_exact() -> None:
    """The collect/query request for the vector input matches the vector byte for byte."""
    case = next(q for q in DATA["queries"] if q["kind"] == "request_exact")
    request = ADAPTER.build_query(ACCOUNT, OrderRef(case["input"]["orderId"]), 0)
    assert request.method == case["request"]["method"]
    assert request.url == ACCOUNT.base_url + case["request"]["path"]
    assert dict(request.headers) == case["request"]["headers"]
    assert request.body == case["request"]["body"].encode()


def test_payout_query_uses_pay_path_and_order_no() -> None:
    """A payout is queried at /{currency}/pay/query, with orderNo when it is known."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("P1", "6002", OrderKind.PAYOUT), 0)
    assert request.url.endswith("/idr/pay/query")
    assert list(json.loads(request.body)) == ["appId", "orderId", "orderNo", "sign"]
    assert wire.read_query(KEYS, request.body)["orderNo"] == "6002"


@pytest.mark.parametrize("case", REPLIES, ids=[q["name"] for q in REPLIES])
def test_query_reply_vector(case: dict[str, Any]) -> None:
    """Each vector reply decodes to its verified fields or raises the error its code names."""
    reply = HttpReply(200, case["body"].encode())
    expect = case["expect"]
    if expect["verified"]:
        events = ADAPTER.parse_query_reply(ACCOUNT, reply)
        assert [dict(e.fields) for e in events] == [expect["fields"]]
        assert events[0].trust == Trust(expect["trust"])
        return
    expected = {"error 4013": QueryNotFound, "error 1004": QueryTransient}[expect["reason"]]
    with pytest.raises(expected) as caught:
        ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert str(caught.value).startswith(expect["reason"])


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("1001", QueryPermanent),
        ("1002", QueryPermanent),
        ("1003", QueryTransient),
        ("1004", QueryTransient),
        ("4013", QueryNotFound),
        ("4014", QueryPermanent),
        ("7777", QueryPermanent),
    ],
)
def test_query_error_codes(code: str, error: type[QueryError]) -> None:
    """Each documented error code maps to the QueryError class that says what to do."""
    with pytest.raises(error) as caught:
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(200, wire.reply_error(code, "x")))
    assert caught.value.code == code


def test_query_reply_with_forged_data_is_auth_error() -> None:
    """A found reply whose data.sign does not verify raises QueryAuth."""
    body = wire.reply_found(KEYS, FIELDS, signing_key=NOT_THE_PLATFORMS_KEY)
    with pytest.raises(QueryAuth):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(200, body))


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (HttpReply(403, b""), QueryAuth),
        (HttpReply(502, b""), QueryTransient),
        (HttpReply(200, b"not json"), QueryPermanent),
        (HttpReply(200, b'{"status":"1","data":null}'), QueryPermanent),
    ],
)
def test_unusable_replies(reply: HttpReply, error: type[QueryError]) -> None:
    """HTTP errors and unreadable bodies raise auth, transient or permanent errors."""
    with pytest.raises(error):
        ADAPTER.parse_query_reply(ACCOUNT, reply)


def test_sandbox_reproduces_vector_bytes() -> None:
    """The platform's side, written separately, rebuilds vector callbacks and replies exactly."""
    for case in CALLBACKS[:7]:
        form = case["request"]["headers"]["Content-Type"].endswith("urlencoded")
        request = wire.callback(KEYS, case["expect"]["fields"], form=form)
        assert request.body == case["request"]["body"].encode(), case["name"]
    assert wire.reply_found(KEYS, REPLIES[0]["expect"]["fields"]) == REPLIES[0]["body"].encode()
    assert wire.reply_not_found() == REPLIES[1]["body"].encode()
    assert wire.reply_busy() == REPLIES[2]["body"].encode()


class _SandboxTransport:
    """Answers queries with the platform's side of the wire, knowing one order."""

    async def send(self, request: HttpRequest) -> HttpReply:
        def lookup(order_id: str, order_no: str | None) -> dict[str, Any] | None:
            return {**FIELDS, "orderId": order_id} if order_id == "M1" else None

        return wire.answer_query(KEYS, request, lookup)


@pytest.mark.parametrize("kind", [OrderKind.PAYMENT, OrderKind.PAYOUT])
def test_query_round_trip_takes_kind_from_the_order(kind: OrderKind) -> None:
    """A query answered by the sandbox yields the verified order, kind taken from the order."""
    order = OrderRef("M1", kind=kind)
    events = asyncio.run(ADAPTER.query(_SandboxTransport(), ACCOUNT, order, 0))
    assert [(e.merchant_order_no, e.status, e.kind) for e in events] == [
        ("M1", Status.SUCCEEDED, kind)
    ]


def test_query_round_trip_unknown_order_is_not_found() -> None:
    """An order the platform does not know raises QueryNotFound."""
    with pytest.raises(QueryNotFound):
        asyncio.run(ADAPTER.query(_SandboxTransport(), ACCOUNT, OrderRef("NOPE"), 0))
