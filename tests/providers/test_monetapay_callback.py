"""MonetaPay callbacks: the independent vectors, statuses, static VA repayments, Jakarta pay
times, forgeries and unusable values, trust, the account's AES key and IV, the ack, and the
sign/verify round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.base import RawCallback, Status, Trust
from providers.errors import Rejected
from providers.monetapay import UNKNOWN_STATUS_FLAG, MonetaPayAccount
from sandbox.wire import monetapay as wire
from tests.providers import vectors
from tests.providers.monetapay_setup import (
    ACCOUNT,
    ADAPTER,
    CALLBACKS,
    DATA,
    KEYS,
    PROPERTY,
    RECORD,
    TIMESTAMP,
    raw_callback,
)


def _reason(raw: RawCallback) -> str:
    with pytest.raises(Rejected) as caught:
        ADAPTER.parse_callback(raw, ACCOUNT)
    return caught.value.reason


@pytest.mark.parametrize("case", CALLBACKS, ids=[c["name"] for c in CALLBACKS])
def test_callback_vector(case: dict[str, Any]) -> None:
    """Each vector callback decodes to its fields and trust, or is rejected for its reason."""
    expect = case["expect"]
    if not expect["verified"]:
        assert _reason(vectors.raw(case)) == expect["reason"]
        return
    event = ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
    assert dict(event.fields) == expect["fields"]
    assert event.trust == Trust(expect["trust"])
    assert event.merchant_order_no == expect["fields"]["mch_order_no"]
    assert event.event_id == event.provider_order_no == expect["fields"]["order_no"]
    assert event.amount == Decimal(expect["fields"]["amount"])
    assert event.currency == "IDR"


def test_vector_statuses_map_to_canonical() -> None:
    """Status 0, 1 and 2 in the vectors become pending, succeeded and failed."""
    by_name = {c["name"]: ADAPTER.parse_callback(vectors.raw(c), ACCOUNT) for c in CALLBACKS[:3]}
    assert by_name["pending"].status is Status.PENDING
    assert by_name["success"].status is Status.SUCCEEDED
    assert by_name["failed"].status is Status.FAILED
    assert by_name["success"].provider_status == "1"


def test_static_va_repayments_are_distinct_events() -> None:
    """Repayments of one static VA share mch_order_no; each has its own order_no as event id."""
    cases = [c for c in CALLBACKS if c["name"].startswith("static_va_repayment")]
    events = [ADAPTER.parse_callback(vectors.raw(c), ACCOUNT) for c in cases]
    assert {e.merchant_order_no for e in events} == {"VA20231114001"}
    assert [e.event_id for e in events] == ["MP2311140005", "MP2311140006"]
    assert [e.amount for e in events] == [Decimal(10000), Decimal(25000)]


def test_pay_time_is_jakarta_time() -> None:
    """pay_time is read as UTC+7 and given as aware UTC."""
    event = ADAPTER.parse_callback(vectors.raw(CALLBACKS[0]), ACCOUNT)
    assert event.paid_at == datetime(2023, 11, 13, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "pay_time", ["0000-00-00 00:00:00", "", None, "14/11/2023", "0001-01-01 00:00:00"]
)
def test_unreadable_pay_time_is_none(pay_time: object) -> None:
    """A signed callback with an absent or unreadable pay_time is kept, with paid_at None."""
    event = ADAPTER.parse_callback(
        raw_callback(wire.callback(KEYS, {**RECORD, "pay_time": pay_time}, TIMESTAMP)), ACCOUNT
    )
    assert event.paid_at is None
    assert event.status is Status.SUCCEEDED


def test_callback_round_trip() -> None:
    """A callback built by MonetaPay's side decodes to the record it was built from."""
    event = ADAPTER.parse_callback(raw_callback(wire.callback(KEYS, RECORD, TIMESTAMP)), ACCOUNT)
    assert dict(event.fields) == {**RECORD, "sign": event.fields["sign"], "timestamp": TIMESTAMP}
    assert (event.status, event.amount, event.kind, event.flags) == (
        Status.SUCCEEDED,
        Decimal(50000),
        None,
        (),
    )


def test_forged_callback_is_rejected() -> None:
    """A callback signed with another token is rejected as bad_signature."""
    forged = wire.callback(KEYS, RECORD, TIMESTAMP, token="forged")
    assert _reason(raw_callback(forged)) == "bad_signature"


@pytest.mark.parametrize("amount", [True, 1.5, "50000", -1, None])
def test_non_integer_amount_is_malformed(amount: object) -> None:
    """A correctly signed record whose amount is not a non-negative integer is malformed."""
    request = wire.callback(KEYS, {**RECORD, "amount": amount}, TIMESTAMP)
    assert _reason(raw_callback(request)) == "malformed"


def test_unknown_status_is_pending_and_flagged() -> None:
    """A status outside 0/1/2 is kept as pending with a review flag rather than guessed."""
    event = ADAPTER.parse_callback(
        raw_callback(wire.callback(KEYS, {**RECORD, "status": 7}, TIMESTAMP)), ACCOUNT
    )
    assert (event.status, event.flags, event.provider_status) == (
        Status.PENDING,
        (UNKNOWN_STATUS_FLAG,),
        "7",
    )


def test_trust_follows_the_account() -> None:
    """An account configured for confirm_by_query marks its events so."""
    account = ACCOUNT.model_copy(update={"trust": Trust.CONFIRM_BY_QUERY})
    event = ADAPTER.parse_callback(raw_callback(wire.callback(KEYS, RECORD, TIMESTAMP)), account)
    assert event.trust is Trust.CONFIRM_BY_QUERY


@pytest.mark.parametrize("field", ["aes_key", "aes_iv"])
def test_aes_key_and_iv_must_be_16_bytes(field: str) -> None:
    """An AES key or IV that is not 16 bytes is refused when the account is loaded."""
    table = {**DATA["account"], field: "short"}
    with pytest.raises(ValidationError, match=field):
        MonetaPayAccount.model_validate(table)


def test_ack_is_monetapays() -> None:
    """The acknowledgement is 200 with MonetaPay's JSON success body."""
    assert (ADAPTER.ack.status, ADAPTER.ack.content_type) == (200, "application/json")
    assert json.loads(ADAPTER.ack.body) == {"code": 0, "message": "success"}


text_values = st.text(max_size=24)  # any Unicode but lone surrogates (never valid UTF-8)


@PROPERTY
@given(
    st.fixed_dictionaries(
        {
            "order_no": text_values.filter(bool),
            "mch_order_no": text_values.filter(bool),
            "status": st.sampled_from([0, 1, 2]),
            "amount": st.integers(0, 10**12),
            "pay_time": st.just("2024-02-29 23:59:59") | st.just(""),
        },
        optional={
            "user_name": text_values,
            "note": st.just('a/b\\c"d'),
            "comeback_number": text_values,
        },
    )
)
def test_sign_then_verify_round_trips(record: dict[str, Any]) -> None:
    """A record with unicode, slashes or empty values, signed by MonetaPay, verifies and decodes."""
    event = ADAPTER.parse_callback(raw_callback(wire.callback(KEYS, record, TIMESTAMP)), ACCOUNT)
    assert {k: v for k, v in event.fields.items() if k not in ("sign", "timestamp")} == record
    assert event.event_id == record["order_no"]
    assert event.amount == Decimal(record["amount"])
