"""MTPay adapter: the independent vectors, round trips through MTPay's side of the wire, junk."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import Headers, HttpReply, HttpRequest, OrderRef, RawCallback, Status, Trust
from providers.errors import (
    QueryAuth,
    QueryError,
    QueryNotFound,
    QueryPermanent,
    QueryTransient,
    Rejected,
)
from providers.mtpay import MTPay, MTPayAccount, signature
from sandbox.wire import mtpay as wire
from tests.providers import vectors

DATA = vectors.load("mtpay")
ACCOUNT: MTPayAccount = vectors.account("mtpay", MTPayAccount)
ADAPTER = MTPay()
KEYS = wire.MTPayProviderKeys(ACCOUNT.access_key, ACCOUNT.secret_key.get_secret_value())
NOW_MS = 1_700_000_000_000
PROPERTY = settings(max_examples=200, deadline=None, database=None)
ORDER = {
    "merchantOrderNo": "M1",
    "orderNo": "MT1",
    "status": "SUCCESS",
    "depositAmount": "100.00",
    "fiatCurrency": "CNY",
    "updatedAt": 1699999999000,
}


def _at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _raw(request: HttpRequest, received_ms: int = NOW_MS + 1234) -> RawCallback:
    headers = Headers(dict(request.headers))
    return RawCallback(body=request.body, headers=headers, received_at=_at(received_ms))


def _reason(raw: RawCallback) -> str:
    with pytest.raises(Rejected) as info:
        ADAPTER.parse_callback(raw, ACCOUNT)
    return info.value.reason


@pytest.mark.parametrize("case", DATA["signature_vectors"], ids=lambda c: c["timestamp"])
def test_signature_vectors(case: dict[str, str]) -> None:
    """The signature matches MTPay's documented example and the vectors' own, byte for byte."""
    assert signature(case["access_key"], case["secret_key"], case["timestamp"]) == case["signature"]


@pytest.mark.parametrize("case", DATA["callbacks"], ids=vectors.callback_ids("mtpay"))
def test_callback_vector(case: dict[str, Any]) -> None:
    """Every vector webhook decodes to its exact fields and trust, or is rejected for its reason."""
    expect = case["expect"]
    if expect["verified"]:
        event = ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
        assert dict(event.fields) == expect["fields"]
        assert event.trust == Trust(expect["trust"])
    else:
        assert _reason(vectors.raw(case)) == expect["reason"]


def test_success_vector_maps_to_canonical_event() -> None:
    """A SUCCESS webhook is keyed by orderNo, with the exact amount and updatedAt as paid_at."""
    event = ADAPTER.parse_callback(vectors.raw(DATA["callbacks"][0]), ACCOUNT)
    assert event.merchant_order_no == "M20231114301"
    assert event.event_id == "MT2311140001"
    assert event.provider_order_no == "MT2311140001"
    assert event.status == Status.SUCCEEDED
    assert event.amount == Decimal("100.00")
    assert event.currency == "CNY"
    assert event.paid_at == datetime(2023, 11, 14, 22, 13, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider_status", "status"),
    [
        ("SUCCESS", Status.SUCCEEDED),
        ("FAILED", Status.FAILED),
        ("EXPIRED", Status.CLOSED),
        ("CANCELLED", Status.CANCELLED),
        ("PENDING", Status.PENDING),
    ],
)
def test_status_map(provider_status: str, status: Status) -> None:
    """Each MTPay status maps to its canonical status."""
    request = wire.callback_request(KEYS, {**ORDER, "status": provider_status}, NOW_MS)
    assert ADAPTER.parse_callback(_raw(request), ACCOUNT).status == status


def test_unknown_status_is_malformed() -> None:
    """A status MTPay does not document is rejected as malformed."""
    request = wire.callback_request(KEYS, {**ORDER, "status": "REFUNDED"}, NOW_MS)
    assert _reason(_raw(request)) == "malformed"


def test_a_negative_amount_is_malformed() -> None:
    """A signed success for "-100.00" would book a payment that takes money back: malformed."""
    request = wire.callback_request(KEYS, {**ORDER, "depositAmount": "-100.00"}, NOW_MS)
    assert _reason(_raw(request)) == "malformed"


@pytest.mark.parametrize("header", ["access_key", "timestamp", "signature"])
def test_missing_auth_header(header: str) -> None:
    """A webhook without one of the three auth headers is missing_auth_headers."""
    request = wire.callback_request(KEYS, ORDER, NOW_MS)
    headers = {k: v for k, v in request.headers.items() if k != header}
    assert _reason(_raw(HttpRequest("POST", request.url, headers, request.body))) == (
        "missing_auth_headers"
    )


def test_wrong_access_key() -> None:
    """A webhook for another access key is bad_access_key even if signed consistently."""
    keys = wire.MTPayProviderKeys("SomeoneElse", KEYS.secret_key)
    assert _reason(_raw(wire.callback_request(keys, ORDER, NOW_MS))) == "bad_access_key"


def test_forged_signature() -> None:
    """A webhook signed with another secret is bad_signature."""
    request = wire.callback_request(KEYS, ORDER, NOW_MS, secret_key="not the secret")
    assert _reason(_raw(request)) == "bad_signature"


def test_non_numeric_timestamp() -> None:
    """A timestamp header that is not milliseconds is bad_timestamp."""
    request = wire.callback_request(KEYS, ORDER, NOW_MS)
    headers = {**request.headers, "timestamp": "2023-11-14T22:13:20Z"}
    raw = _raw(HttpRequest("POST", request.url, headers, request.body))
    assert _reason(raw) == "bad_timestamp"


def test_timestamp_tolerance_boundary() -> None:
    """A timestamp exactly at the tolerance passes; one millisecond more is bad_timestamp."""
    request = wire.callback_request(KEYS, ORDER, NOW_MS)
    ADAPTER.parse_callback(_raw(request, NOW_MS - 300_000), ACCOUNT)
    assert _reason(_raw(request, NOW_MS + 300_001)) == "bad_timestamp"


def test_header_names_are_case_insensitive() -> None:
    """Auth headers are found whatever case a proxy gives their names."""
    request = wire.callback_request(KEYS, ORDER, NOW_MS)
    headers = {k.upper(): v for k, v in request.headers.items()}
    event = ADAPTER.parse_callback(_raw(HttpRequest("POST", "/", headers, request.body)), ACCOUNT)
    assert dict(event.fields) == ORDER


def test_account_trust_override() -> None:
    """An account configured `trust = signature` applies webhooks without a query."""
    account = ACCOUNT.model_copy(update={"trust": Trust.SIGNATURE})
    event = ADAPTER.parse_callback(_raw(wire.callback_request(KEYS, ORDER, NOW_MS)), account)
    assert event.trust == Trust.SIGNATURE


def test_ack_is_exact() -> None:
    """The ack is 200 with MTPay's envelope, byte for byte."""
    assert ADAPTER.ack.status == 200
    assert ADAPTER.ack.content_type == "application/json"
    assert ADAPTER.ack.body == (
        b'{"data":null,"isSuccess":true,"statusCode":"SUCCESS","message":"","version":"2.0"}'
    )


def test_account_repr_hides_secret() -> None:
    """The secret key never appears in the account's repr."""
    assert ACCOUNT.secret_key.get_secret_value() not in repr(ACCOUNT)


# -- status query ---------------------------------------------------------------------------------
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


# -- properties -----------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
GOOD_HEADERS = wire.callback_request(KEYS, ORDER, NOW_MS).headers
HEADERS = st.dictionaries(
    st.sampled_from(["access_key", "timestamp", "signature"]) | st.text(), st.text()
) | st.just(dict(GOOD_HEADERS))
BODIES = st.fixed_dictionaries(
    {},
    optional={
        key: JSON | st.just(value) for key, value in {**ORDER, "updatedAt": "1699999999000"}.items()
    },
)


def _only_rejected(body: bytes, headers: dict[str, str]) -> None:
    raw = RawCallback(body=body, headers=Headers(headers), received_at=_at(NOW_MS))
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(raw, ACCOUNT)


@PROPERTY
@given(st.binary(), HEADERS)
def test_arbitrary_bytes_only_raise_rejected(body: bytes, headers: dict[str, str]) -> None:
    """Any byte string as a body, with any headers, either parses or raises Rejected."""
    _only_rejected(body, headers)


@PROPERTY
@given(JSON | BODIES, HEADERS)
def test_arbitrary_json_only_raises_rejected(value: Any, headers: dict[str, str]) -> None:
    """Any JSON value, or the right keys with junk values, either parses or raises Rejected."""
    _only_rejected(json.dumps(value).encode(), headers)


@PROPERTY
@given(st.binary() | (JSON | BODIES).map(lambda v: json.dumps(v).encode()), st.integers(100, 599))
def test_arbitrary_query_replies_only_raise_query_errors(body: bytes, status: int) -> None:
    """Any reply body and HTTP status either parses or raises a QueryError subclass."""
    with contextlib.suppress(QueryError):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, body))


@PROPERTY
@given(st.text(), st.text(), st.integers(0, 10**15).map(str))
def test_signature_agrees_with_provider_side(access_key: str, secret: str, timestamp: str) -> None:
    """The adapter's signature and MTPay's side agree for any key, secret and timestamp."""
    assert signature(access_key, secret, timestamp) == wire.sign(access_key, secret, timestamp)


FIELDS = st.fixed_dictionaries(
    {
        "merchantOrderNo": st.text(min_size=1) | st.just('M/1\\2"3'),
        "orderNo": st.text(min_size=1),
        "status": st.sampled_from(["SUCCESS", "FAILED", "EXPIRED", "CANCELLED", "PENDING"]),
        "depositAmount": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
        "fiatCurrency": st.sampled_from(["CNY", "", "USDT"]),
        "updatedAt": st.integers(0, 2**41),
    },
    optional={"note": st.text(), "extra": st.lists(st.text(), max_size=3)},
)


@PROPERTY
@given(FIELDS)
def test_callback_round_trip(fields: dict[str, Any]) -> None:
    """Whatever MTPay sends (unicode, slashes, empty strings) decodes to the same fields."""
    event = ADAPTER.parse_callback(_raw(wire.callback_request(KEYS, fields, NOW_MS)), ACCOUNT)
    assert dict(event.fields) == fields
    assert event.amount == Decimal(fields["depositAmount"])
    assert event.event_id == fields["orderNo"]


@PROPERTY
@given(FIELDS)
def test_query_round_trip_property(fields: dict[str, Any]) -> None:
    """Whatever order MTPay answers a query with decodes to the same fields."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef(fields["merchantOrderNo"]), NOW_MS)
    reply = wire.answer_query(KEYS, request, lambda _no: fields, NOW_MS)
    (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert dict(event.fields) == fields
