"""OPay callbacks: the independent vectors, both shapes (encrypted and plain), status mapping,
the checks of client key, timestamp and signature, the ack, and the encrypted round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given

from providers.base import Headers, HttpRequest, RawCallback, Status, Trust
from providers.errors import Rejected
from sandbox.wire import opay as wire
from tests.providers import vectors
from tests.providers.opay_setup import (
    ACCOUNT,
    ADAPTER,
    DATA,
    FIELDS,
    KEYS,
    NOT_OPAYS_KEY,
    NOW_MS,
    ORDER,
    PROPERTY,
    at,
)


def _raw(request: HttpRequest, received_ms: int = NOW_MS + 1234) -> RawCallback:
    headers = Headers(dict(request.headers))
    return RawCallback(body=request.body, headers=headers, received_at=at(received_ms))


@pytest.mark.parametrize("case", DATA["callbacks"], ids=vectors.callback_ids("opay"))
def test_callback_vector(case: dict[str, Any]) -> None:
    """Every vector webhook decodes to its exact fields and trust, or is rejected for its reason."""
    expect = case["expect"]
    if expect["verified"]:
        event = ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
        assert dict(event.fields) == expect["fields"]
        assert event.trust == Trust(expect["trust"])
    else:
        with pytest.raises(Rejected) as info:
            ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
        assert info.value.reason == expect["reason"]


def test_success_vector_maps_to_canonical_event() -> None:
    """An encrypted SUCCESS webhook gives the transaction id, exact amount and UTC paid_at."""
    event = ADAPTER.parse_callback(vectors.raw(DATA["callbacks"][0]), ACCOUNT)
    assert event.merchant_order_no == "M20231114001"
    assert event.event_id == "231114145500000001T"
    assert event.provider_order_no == "231114145500000001"
    assert (event.status, event.provider_status) == (Status.SUCCEEDED, "SUCCESS")
    assert event.amount == Decimal("300.00")
    assert str(event.amount) == "300.00"
    assert event.currency == "NGN"
    assert event.paid_at == datetime(2023, 11, 14, 22, 13, 18, tzinfo=UTC)


def test_plain_vector_uses_tranid_header_and_confirm_by_query() -> None:
    """The unsigned webhook is keyed by X-Opay-Tranid and is never trusted on its own."""
    case = next(c for c in DATA["callbacks"] if c["name"] == "plain_unsigned")
    event = ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
    assert event.event_id == "P231114000004"
    assert event.trust == Trust.CONFIRM_BY_QUERY
    assert event.amount == Decimal("150.00")


def test_plain_without_tranid_falls_back_to_order_no_and_status() -> None:
    """Without transactionId or X-Opay-Tranid the event id is orderNo:status."""
    fields = {k: v for k, v in ORDER.items() if k != "transactionId"}
    event = ADAPTER.parse_callback(_raw(wire.plain_callback(fields)), ACCOUNT)
    assert event.event_id == "231114145500000009:SUCCESS"


def test_plain_callback_trust_ignores_account_trust() -> None:
    """An account configured `signature` still gets confirm_by_query for the unsigned shape."""
    account = ACCOUNT.model_copy(update={"trust": Trust.SIGNATURE})
    event = ADAPTER.parse_callback(_raw(wire.plain_callback(ORDER, "T1")), account)
    assert event.trust == Trust.CONFIRM_BY_QUERY


def test_account_trust_overrides_default_for_encrypted_shape() -> None:
    """`trust = confirm_by_query` on the account marks even signed webhooks for confirmation."""
    account = ACCOUNT.model_copy(update={"trust": Trust.CONFIRM_BY_QUERY})
    event = ADAPTER.parse_callback(_raw(wire.encrypted_callback(KEYS, ORDER, NOW_MS)), account)
    assert event.trust == Trust.CONFIRM_BY_QUERY


@pytest.mark.parametrize(
    ("provider_status", "status"),
    [
        ("SUCCESS", Status.SUCCEEDED),
        ("FAIL", Status.FAILED),
        ("CLOSE", Status.CLOSED),
        ("CANCEL", Status.CANCELLED),
        ("PENDING", Status.PENDING),
    ],
)
def test_status_map(provider_status: str, status: Status) -> None:
    """Each OPay status maps to its canonical status."""
    request = wire.encrypted_callback(KEYS, {**ORDER, "status": provider_status}, NOW_MS)
    assert ADAPTER.parse_callback(_raw(request), ACCOUNT).status == status


def test_unknown_status_is_malformed() -> None:
    """A signed webhook with a status OPay does not document is rejected as malformed."""
    request = wire.encrypted_callback(KEYS, {**ORDER, "status": "REFUNDED"}, NOW_MS)
    with pytest.raises(Rejected) as info:
        ADAPTER.parse_callback(_raw(request), ACCOUNT)
    assert info.value.reason == "malformed"


def test_a_negative_amount_is_malformed() -> None:
    """A signed success for "-300.00" would book a payment that takes money back: malformed."""
    request = wire.encrypted_callback(KEYS, {**ORDER, "amount": "-300.00"}, NOW_MS)
    with pytest.raises(Rejected) as info:
        ADAPTER.parse_callback(_raw(request), ACCOUNT)
    assert info.value.reason == "malformed"


def test_header_timestamp_is_ignored_in_favour_of_body() -> None:
    """Only the body's (signed) timestamp is checked; a stale header copy does not matter."""
    request = wire.encrypted_callback(KEYS, ORDER, NOW_MS)
    headers = {**request.headers, "timestamp": "1"}
    assert ADAPTER.parse_callback(_raw(replace(request, headers=headers)), ACCOUNT).fields == ORDER


def test_timestamp_tolerance_boundary() -> None:
    """A timestamp exactly at the tolerance passes; one millisecond more is bad_timestamp."""
    request = wire.encrypted_callback(KEYS, ORDER, NOW_MS)
    ADAPTER.parse_callback(_raw(request, NOW_MS + 300_000), ACCOUNT)
    with pytest.raises(Rejected) as info:
        ADAPTER.parse_callback(_raw(request, NOW_MS - 300_001), ACCOUNT)
    assert info.value.reason == "bad_timestamp"


def test_forged_signature_is_rejected_before_decryption() -> None:
    """A webhook signed with another key is bad_signature even if its ciphertext is garbage."""
    request = wire.encrypted_callback(KEYS, ORDER, NOW_MS, signing_key=NOT_OPAYS_KEY)
    with pytest.raises(Rejected) as info:
        ADAPTER.parse_callback(_raw(request), ACCOUNT)
    assert info.value.reason == "bad_signature"


def test_wrong_client_auth_key_is_rejected() -> None:
    """A webhook for another business's clientAuthKey is bad_client_auth_key."""
    keys = replace(KEYS, client_auth_key="X" * 32)
    with pytest.raises(Rejected) as info:
        ADAPTER.parse_callback(_raw(wire.encrypted_callback(keys, ORDER, NOW_MS)), ACCOUNT)
    assert info.value.reason == "bad_client_auth_key"


def test_ack() -> None:
    """The ack is 200 with OPay's success JSON."""
    assert ADAPTER.ack.status == 200
    assert json.loads(ADAPTER.ack.body) == {"code": "00000", "message": "SUCCESSFUL"}


@PROPERTY
@given(FIELDS)
def test_encrypted_round_trip(fields: dict[str, Any]) -> None:
    """Whatever OPay signs and encrypts (unicode, slashes, empty strings) decodes unchanged."""
    event = ADAPTER.parse_callback(_raw(wire.encrypted_callback(KEYS, fields, NOW_MS)), ACCOUNT)
    assert dict(event.fields) == fields
    assert event.amount == Decimal(fields["amount"])
