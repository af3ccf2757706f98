"""MTPay status queries: the exact request, reply vectors and codes, and round trips through
MTPay's side of the wire (found, not found, refused)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given

from providers.base import HttpReply, OrderRef, Trust
from providers.errors import QueryAuth, QueryError, QueryNotFound, QueryPermanent, QueryTransient
from sandbox.wire import mtpay as wire
from tests.providers.mtpay_setup import (
    ACCOUNT,
    ADAPTER,
    DATA,
    FIELDS,
    KEYS,
    NOW_MS,
    ORDER,
    PROPERTY,
)


def _query_case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = next(q for q in DATA["queries"] if q["name"] == name)
    return case


def test_query_request_exact() -> None:
    """The order query is byte for byte the vectors' request."""
    case = _query_case("order_query")
    request = ADAPTER.build_query(
        ACCOUNT, OrderRef(case["input"]["merchantOrderNo"]), case["input"]["timestamp_ms"]
    )
    assert request.method == case["request"]["method"]
    assert request.url == ACCOUNT.base_url + case["request"]["path"]
    assert dict(request.headers) == case["request"]["headers"]
    assert request.body == case["request"]["body"].encode()


def test_query_url_encodes_order_no() -> None:
    """A merchant order number with reserved characters is percent-encoded."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("A B/&=ü"), NOW_MS)
    assert request.url.endswith("?merchantOrderNo=A%20B%2F%26%3D%C3%BC")


@pytest.mark.parametrize("name", ["found", "signature_error"])
def test_query_reply_vector(name: str) -> None:
    """Vector replies decode to their fields or raise the error their status code implies."""
    case = _query_case(name)
    reply = HttpReply(200, case["body"].encode())
    if case["expect"]["verified"]:
        (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
        assert dict(event.fields) == case["expect"]["fields"]
        assert event.trust == Trust(case["expect"]["trust"])
        return
    with pytest.raises(QueryAuth) as info:
        ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert info.value.code == case["expect"]["reason"]


def _envelope(code: str, message: str = "", data: object = None) -> bytes:
    success = code == "SUCCESS"
    body = {"data": data, "isSuccess": success, "statusCode": code, "message": message}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, _envelope("PARAMETER_ERROR", "order not found"), QueryNotFound),
        (200, _envelope("PARAMETER_ERROR", "merchantOrderNo is required"), QueryPermanent),
        (200, _envelope("ACCESS_KEY_ERROR"), QueryAuth),
        (200, _envelope("TIMESTAMP_ERROR"), QueryAuth),
        (200, _envelope("ACCOUNT_STATUS_ERROR"), QueryAuth),
        (200, _envelope("SYSTEM_ERROR"), QueryTransient),
        (200, _envelope("SYSTEM_BUSY"), QueryTransient),
        (200, _envelope("SOMETHING_NEW"), QueryPermanent),
        (200, _envelope("SUCCESS"), QueryPermanent),
        (200, _envelope("SUCCESS", data={**ORDER, "status": "??"}), QueryPermanent),
        (200, b"<html/>", QueryPermanent),
        (401, b"", QueryAuth),
        (502, b"", QueryTransient),
    ],
)
def test_query_reply_codes(status: int, body: bytes, error: type[QueryError]) -> None:
    """Status codes map to not-found, retry, operator action or permanent failure."""
    with pytest.raises(error):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, body))


def _lookup(merchant_order_no: str) -> dict[str, Any] | None:
    return {**ORDER, "merchantOrderNo": merchant_order_no} if merchant_order_no != "none" else None


def test_query_round_trip() -> None:
    """build_query → MTPay's answer → parse_query_reply gives the order MTPay holds."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("A B/&=ü"), NOW_MS)
    (event,) = ADAPTER.parse_query_reply(ACCOUNT, wire.answer_query(KEYS, request, _lookup, NOW_MS))
    assert dict(event.fields) == {**ORDER, "merchantOrderNo": "A B/&=ü"}
    assert event.trust == Trust.SIGNATURE


def test_query_round_trip_not_found() -> None:
    """MTPay's answer for an unknown order raises QueryNotFound."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("none"), NOW_MS)
    with pytest.raises(QueryNotFound):
        ADAPTER.parse_query_reply(ACCOUNT, wire.answer_query(KEYS, request, _lookup, NOW_MS))


@pytest.mark.parametrize(
    ("keys", "now_ms", "code"),
    [
        (wire.MTPayProviderKeys(ACCOUNT.access_key, "other secret"), NOW_MS, "SIGNATURE_ERROR"),
        (wire.MTPayProviderKeys("other key", KEYS.secret_key), NOW_MS, "ACCESS_KEY_ERROR"),
        (KEYS, NOW_MS + 600_000, "TIMESTAMP_ERROR"),
    ],
)
def test_query_round_trip_refused(keys: wire.MTPayProviderKeys, now_ms: int, code: str) -> None:
    """A query MTPay refuses for its credentials surfaces as QueryAuth with MTPay's code."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("M1"), NOW_MS)
    with pytest.raises(QueryAuth) as info:
        ADAPTER.parse_query_reply(ACCOUNT, wire.answer_query(keys, request, _lookup, now_ms))
    assert info.value.code == code


@PROPERTY
@given(FIELDS)
def test_query_round_trip_property(fields: dict[str, Any]) -> None:
    """Whatever order MTPay answers a query with decodes to the same fields."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef(fields["merchantOrderNo"]), NOW_MS)
    reply = wire.answer_query(KEYS, request, lambda _no: fields, NOW_MS)
    (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert dict(event.fields) == fields
