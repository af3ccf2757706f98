"""MonetaPay status queries: the exact request, reply vectors, refusals and error replies,
forged records, the sandbox's bytes against the vectors, and round trips through MonetaPay's
side of the wire."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from providers.base import HttpReply, OrderRef, Trust
from providers.errors import QueryAuth, QueryError, QueryNotFound, QueryPermanent, QueryTransient
from sandbox.wire import monetapay as wire
from tests.providers.monetapay_setup import (
    ACCOUNT,
    ADAPTER,
    CALLBACKS,
    DATA,
    KEYS,
    NOW_MS,
    RECORD,
    TIMESTAMP,
)

REPLIES = [q for q in DATA["queries"] if q["kind"] == "reply"]


def test_query_request_exact() -> None:
    """The /trade/query request for the vector input matches the vector byte for byte."""
    case = next(q for q in DATA["queries"] if q["kind"] == "request_exact")
    order = OrderRef(case["input"]["mch_order_no"])
    request = ADAPTER.build_query(ACCOUNT, order, case["input"]["timestamp"] * 1000 + 999)
    assert request.method == case["request"]["method"]
    assert request.url == ACCOUNT.base_url + case["request"]["path"]
    assert dict(request.headers) == case["request"]["headers"]
    assert request.body == case["request"]["body"].encode()


@pytest.mark.parametrize("case", REPLIES, ids=[q["name"] for q in REPLIES])
def test_query_reply_vector(case: dict[str, Any]) -> None:
    """Each vector reply decodes to the expected verified records (an empty list when not found)."""
    events = ADAPTER.parse_query_reply(ACCOUNT, HttpReply(200, case["body"].encode()))
    assert [dict(e.fields) for e in events] == case["expect"]["fields"]
    assert all(e.trust == Trust(case["expect"]["trust"]) for e in events)


def test_sandbox_reproduces_vector_bytes() -> None:
    """MonetaPay's side, written separately, rebuilds vector callbacks and replies byte for byte."""
    for case in CALLBACKS[:8]:
        fields = case["expect"]["fields"]
        outer = json.loads(case["request"]["body"])["data"]
        request = wire.callback(
            KEYS,
            fields,
            fields["timestamp"],
            hint=outer["mch_order_no"],
            with_partner_key="partner_key" in outer,
        )
        assert request.body == case["request"]["body"].encode(), case["name"]
    assert wire.reply_found(KEYS, REPLIES[0]["expect"]["fields"], 0) == REPLIES[0]["body"].encode()
    assert wire.reply_not_found(KEYS) == REPLIES[1]["body"].encode()


def _lookup(mch_order_no: str) -> list[dict[str, Any]]:
    if mch_order_no != "VA1":
        return []
    return [
        {**RECORD, "mch_order_no": "VA1", "order_no": "R1", "amount": 10000},
        {**RECORD, "mch_order_no": "VA1", "order_no": "R2", "amount": 25000},
    ]


def _ask(order: OrderRef, keys: wire.MonetaPayProviderKeys = KEYS) -> list[Any]:
    request = ADAPTER.build_query(ACCOUNT, order, NOW_MS)
    reply = wire.answer_query(keys, request, _lookup, NOW_MS)
    return ADAPTER.parse_query_reply(ACCOUNT, reply)


def test_query_round_trip_lists_every_repayment() -> None:
    """A query answered by the sandbox yields one verified event per listed repayment."""
    events = _ask(OrderRef("VA1"))
    assert [(e.event_id, e.amount) for e in events] == [
        ("R1", Decimal(10000)),
        ("R2", Decimal(25000)),
    ]


def test_query_round_trip_unknown_order_is_empty() -> None:
    """An order MonetaPay does not know comes back as an empty list, not an error."""
    assert _ask(OrderRef("NOPE")) == []


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        (wire.MonetaPayProviderKeys(**{**KEYS.__dict__, "token": "other"}), QueryAuth),
        (wire.MonetaPayProviderKeys(**{**KEYS.__dict__, "partner_key": "other"}), QueryAuth),
        (wire.MonetaPayProviderKeys(**{**KEYS.__dict__, "mch_id": 1}), QueryAuth),
        (wire.MonetaPayProviderKeys(**{**KEYS.__dict__, "aes_key": "X" * 16}), QueryPermanent),
    ],
    ids=["sign_error", "partner_key_error", "mch_id_error", "param_error"],
)
def test_query_refusals_map_to_error_classes(
    keys: wire.MonetaPayProviderKeys, error: type[QueryError]
) -> None:
    """The sandbox's refusals of our request surface as the QueryError class an operator acts on."""
    with pytest.raises(error):
        _ask(OrderRef("VA1"), keys)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (wire.reply_busy(), QueryTransient),
        (wire.reply_error("500", "system exception"), QueryTransient),
        (wire.reply_error("404", "order not exist"), QueryNotFound),
        (wire.reply_error("404", "no such order"), QueryNotFound),
        (wire.reply_error("1001", "merchant not exist"), QueryPermanent),
        (wire.reply_error("1", "appid not found"), QueryAuth),
        (wire.reply_error("7", "ip not allowed"), QueryAuth),
        (wire.reply_error("9", "amount invalid"), QueryPermanent),
        (b"<html>", QueryPermanent),
        (b'{"code":"0","message":"success","data":null}', QueryPermanent),
    ],
)
def test_query_error_replies(body: bytes, error: type[QueryError]) -> None:
    """A non-zero code is classed by its message: not found only when it says the order is not
    there (a merchant or app id that does not exist is the setup failing); an unreadable reply
    is permanent."""
    with pytest.raises(error):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(200, body))


@pytest.mark.parametrize(
    ("status", "error"), [(401, QueryAuth), (503, QueryTransient), (404, QueryPermanent)]
)
def test_query_http_status(status: int, error: type[QueryError]) -> None:
    """HTTP statuses the transport passes through map to auth, transient or permanent errors."""
    with pytest.raises(error):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, b"{}"))


def test_query_reply_with_a_forged_record_is_auth_error() -> None:
    """A listed record whose sign does not verify fails the whole reply with QueryAuth."""
    forged = wire.signed_record(KEYS, RECORD, TIMESTAMP, token="not-the-token")
    with pytest.raises(QueryAuth):
        ADAPTER.parse_query_reply(
            ACCOUNT, HttpReply(200, wire.reply_found(KEYS, [forged], TIMESTAMP))
        )
