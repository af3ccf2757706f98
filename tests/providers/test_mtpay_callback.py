"""MTPay callbacks: the signature vectors, statuses, the auth headers (missing, wrong, forged,
out of tolerance), trust, the ack, the secret kept out of repr, and the round trips with
MTPay's side of the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.base import Headers, HttpRequest, RawCallback, Status, Trust
from providers.errors import Rejected
from providers.mtpay import signature
from sandbox.wire import mtpay as wire
from tests.providers import vectors
from tests.providers.mtpay_setup import (
    ACCOUNT,
    ADAPTER,
    DATA,
    FIELDS,
    KEYS,
    NOW_MS,
    ORDER,
    PROPERTY,
    at,
)


def _raw(request: HttpRequest, received_ms: int = NOW_MS + 1234) -> RawCallback:
    headers = Headers(dict(request.headers))
    return RawCallback(body=request.body, headers=headers, received_at=at(received_ms))


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


@PROPERTY
@given(st.text(), st.text(), st.integers(0, 10**15).map(str))
def test_signature_agrees_with_provider_side(access_key: str, secret: str, timestamp: str) -> None:
    """The adapter's signature and MTPay's side agree for any key, secret and timestamp."""
    assert signature(access_key, secret, timestamp) == wire.sign(access_key, secret, timestamp)


@PROPERTY
@given(FIELDS)
def test_callback_round_trip(fields: dict[str, Any]) -> None:
    """Whatever MTPay sends (unicode, slashes, empty strings) decodes to the same fields."""
    event = ADAPTER.parse_callback(_raw(wire.callback_request(KEYS, fields, NOW_MS)), ACCOUNT)
    assert dict(event.fields) == fields
    assert event.amount == Decimal(fields["depositAmount"])
    assert event.event_id == fields["orderNo"]
