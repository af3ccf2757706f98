"""OTGPAY callbacks: the independent vectors, status flags and kinds, JSON and form bodies,
signed but unusable values, forgeries, the ack, the account's key paths, and the sign/verify
round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.base import Headers, OrderKind, RawCallback, Status, Trust
from providers.otgpay import UNKNOWN_STATUS_FLAG, OTGPayAccount, signing_string
from sandbox.wire import otgpay as wire
from tests.providers import vectors
from tests.providers.otgpay_setup import (
    ACCOUNT,
    ADAPTER,
    CALLBACKS,
    DATA,
    FIELDS,
    KEYS,
    NOT_THE_PLATFORMS_KEY,
    NOW,
    RSA_PROPERTY,
    SECRET,
    raw_callback,
    rejection,
)


def _event(fields: dict[str, Any], *, form: bool = False) -> Any:
    return ADAPTER.parse_callback(raw_callback(wire.callback(KEYS, fields, form=form)), ACCOUNT)


@pytest.mark.parametrize("case", CALLBACKS, ids=[c["name"] for c in CALLBACKS])
def test_callback_vector(case: dict[str, Any]) -> None:
    """Each vector callback decodes to its fields and trust, or is rejected for its reason."""
    expect = case["expect"]
    if not expect["verified"]:
        assert rejection(vectors.raw(case)) == expect["reason"]
        return
    event = ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
    assert dict(event.fields) == expect["fields"]
    assert event.trust == Trust(expect["trust"])
    assert signing_string(event.fields, SECRET) == expect["sign_string"]
    assert event.event_id == event.provider_order_no == expect["fields"]["orderNo"]
    assert event.merchant_order_no == expect["fields"]["orderId"]
    assert event.amount == Decimal(expect["fields"]["amount"])
    assert event.currency == "IDR"


@pytest.mark.parametrize(
    ("name", "status", "flags", "kind"),
    [
        ("success", Status.SUCCEEDED, (), OrderKind.PAYMENT),
        ("failed", Status.FAILED, (), OrderKind.PAYMENT),
        ("partial", Status.SUCCEEDED, ("partial_payment",), OrderKind.PAYMENT),
        ("overpaid", Status.SUCCEEDED, ("overpayment",), OrderKind.PAYMENT),
        ("payout_completed", Status.SUCCEEDED, (), OrderKind.PAYOUT),
        ("form_encoded", Status.SUCCEEDED, (), OrderKind.PAYMENT),
    ],
)
def test_vector_status_flags_and_kind(
    name: str, status: Status, flags: tuple[str, ...], kind: OrderKind
) -> None:
    """Partial and over-payments succeed with a review flag; payout.* events mark payouts."""
    case = next(c for c in CALLBACKS if c["name"] == name)
    event = ADAPTER.parse_callback(vectors.raw(case), ACCOUNT)
    assert (event.status, event.flags, event.kind) == (status, flags, kind)


def test_partial_payment_amount_is_what_was_paid() -> None:
    """A partial payment's amount is the paid amount from the callback."""
    case = next(c for c in CALLBACKS if c["name"] == "partial")
    assert ADAPTER.parse_callback(vectors.raw(case), ACCOUNT).amount == Decimal("200.00")


def test_form_and_json_give_the_same_provider_status() -> None:
    """Status 2 as a JSON integer and as a form string give the same provider_status "2"."""
    assert _event(FIELDS).provider_status == _event(FIELDS, form=True).provider_status == "2"


@pytest.mark.parametrize(
    ("status", "expected", "flags"),
    [
        (0, Status.PENDING, ()),
        ("1", Status.PENDING, ()),
        (-1, Status.PENDING, (UNKNOWN_STATUS_FLAG,)),
        ("-1", Status.PENDING, (UNKNOWN_STATUS_FLAG,)),
        (9, Status.PENDING, (UNKNOWN_STATUS_FLAG,)),
        ("5", Status.SUCCEEDED, ("overpayment",)),
    ],
)
def test_status_table(status: object, expected: Status, flags: tuple[str, ...]) -> None:
    """0/1 are pending; -1 and codes outside the table are pending with a review flag."""
    event = _event({**FIELDS, "status": status})
    assert (event.status, event.flags) == (expected, flags)


def test_pay_time_is_utc_plus_7() -> None:
    """payTime is read as UTC+7 and given as aware UTC."""
    assert _event(FIELDS).paid_at == datetime(2023, 11, 13, 22, 13, 20, tzinfo=UTC)


def test_currency_is_upper_cased_and_defaults_to_the_accounts() -> None:
    """The callback's currency is upper-cased; without one, the account's currency is used."""
    assert _event({**FIELDS, "currency": "idr"}).currency == "IDR"
    without = {k: v for k, v in FIELDS.items() if k != "currency"}
    assert _event(without).currency == ACCOUNT.currency.upper()


def test_other_app_id_is_account_mismatch() -> None:
    """A correctly signed callback for another appId is rejected as account_mismatch."""
    request = wire.callback(KEYS, {**FIELDS, "appId": 9999})
    assert rejection(raw_callback(request)) == "account_mismatch"


@pytest.mark.parametrize(
    "change",
    [{"amount": "3e2"}, {"amount": 1.5}, {"status": "two"}, {"status": True}, {"orderNo": ""}],
)
def test_signed_but_unusable_values_are_malformed(change: dict[str, Any]) -> None:
    """Correctly signed fields that cannot be read as an amount, status or id are malformed."""
    assert rejection(raw_callback(wire.callback(KEYS, {**FIELDS, **change}))) == "malformed"


def test_forged_callback_is_rejected() -> None:
    """A callback signed with a key that is not the platform's is rejected as bad_signature."""
    request = wire.callback(KEYS, FIELDS, signing_key=NOT_THE_PLATFORMS_KEY)
    assert rejection(raw_callback(request)) == "bad_signature"


@pytest.mark.parametrize("content_type", ["text/plain", ""])
def test_body_kind_is_sniffed_without_a_telling_content_type(content_type: str) -> None:
    """Without a JSON or form Content-Type, a body opening `{` is JSON and anything else a form."""
    for form in (False, True):
        request = wire.callback(KEYS, FIELDS, form=form)
        raw = RawCallback(request.body, Headers({"Content-Type": content_type}), NOW)
        assert ADAPTER.parse_callback(raw, ACCOUNT).event_id == "6001"


@pytest.mark.parametrize("edit", [
    lambda body: body + b"&",
    lambda body: body + b"&remark",
    lambda body: body.replace(b"&", b"&&", 1),
], ids=["trailing_ampersand", "bare_name", "empty_segment"])
def test_a_form_body_is_read_as_the_form_standard_reads_it(edit: Any) -> None:
    """Empty segments and a name without `=` are valid form encoding: the signed callback is
    accepted (it was acknowledged already; rejecting it would lose the payment until a poll)."""
    request = wire.callback(KEYS, FIELDS, form=True)
    raw = RawCallback(edit(request.body), Headers(request.headers), NOW)
    assert ADAPTER.parse_callback(raw, ACCOUNT).event_id == "6001"


def test_repeated_form_field_is_malformed() -> None:
    """A form body that repeats a field is malformed rather than resolved by guessing."""
    request = wire.callback(KEYS, FIELDS, form=True)
    raw = RawCallback(request.body + b"&status=3", Headers(request.headers), NOW)
    assert rejection(raw) == "malformed"


def test_account_key_paths_resolve_against_base_dir() -> None:
    """Key paths load relative to the validation context's base_dir and fail clearly without it."""
    assert ACCOUNT.provider_public_key.key_size == 2048
    with pytest.raises(ValidationError, match="provider_public_key"):
        OTGPayAccount.model_validate({**DATA["account"], "provider_public_key": "keys/none.pem"})


def test_ack_is_plain_success() -> None:
    """The acknowledgement is 200 text/plain SUCCESS."""
    assert (ADAPTER.ack.status, ADAPTER.ack.content_type, ADAPTER.ack.body) == (
        200,
        "text/plain",
        b"SUCCESS",
    )


text_values = st.text(max_size=24)  # any Unicode but lone surrogates (never valid UTF-8)


@RSA_PROPERTY
@given(
    st.fixed_dictionaries(
        {
            "orderId": text_values.filter(bool),
            "orderNo": text_values.filter(bool),
            "amount": st.decimals(0, 10**9, places=2).map(str),
            "status": st.sampled_from([0, 1, 2, 3, 4, 5, -1]),
            "errorMsg": text_values,
        },
        optional={"payTime": st.just("2024-02-29 23:59:59"), "note": st.just("a/b&c=d")},
    ),
    st.booleans(),
)
def test_sign_then_verify_round_trips(fields: dict[str, Any], form: bool) -> None:
    """Any field set with unicode, slashes, & or empty values, signed by the platform, verifies."""
    event = _event(fields, form=form)
    sent = {k: (str(v) if form else v) for k, v in fields.items()}
    assert {k: v for k, v in event.fields.items() if k != "sign"} == sent
    assert event.amount == Decimal(fields["amount"])
