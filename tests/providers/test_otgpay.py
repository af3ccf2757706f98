"""OTGPAY adapter: the independent vectors, round trips through the platform's side, junk."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.base import (
    Headers,
    HttpReply,
    HttpRequest,
    OrderKind,
    OrderRef,
    RawCallback,
    Status,
    Trust,
)
from providers.errors import (
    QueryAuth,
    QueryError,
    QueryNotFound,
    QueryPermanent,
    QueryTransient,
    Rejected,
)
from providers.otgpay import UNKNOWN_STATUS_FLAG, OTGPay, OTGPayAccount, signing_string
from sandbox.wire import otgpay as wire
from tests.providers import vectors

DATA = vectors.load("otgpay")
ACCOUNT: OTGPayAccount = vectors.account("otgpay", OTGPayAccount)
ADAPTER = OTGPay()
SECRET = ACCOUNT.merchant_secret.get_secret_value()
KEYS = wire.OTGPayProviderKeys.from_pem_files(
    vectors.VECTORS / "keys" / "otgpay-provider-private.pem",
    vectors.VECTORS / "keys" / "otgpay-merchant-public.pem",
    SECRET,
    ACCOUNT.app_id,
)
NOT_THE_PLATFORMS_KEY = ACCOUNT.merchant_private_key
NOW = datetime(2023, 11, 14, tzinfo=UTC)
RSA_PROPERTY = settings(max_examples=40, deadline=None, database=None)
CHEAP_PROPERTY = settings(max_examples=200, deadline=None, database=None)
CALLBACKS = DATA["callbacks"]
REPLIES = [q for q in DATA["queries"] if q["kind"] == "reply"]
FIELDS: dict[str, Any] = {
    "appId": 1054,
    "currency": "IDR",
    "orderId": "M1",
    "orderNo": "6001",
    "amount": "300.00",
    "fee": "3.00",
    "status": 2,
    "payTime": "2023-11-14 05:13:20",
    "errorMsg": "",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _raw(request: HttpRequest) -> RawCallback:
    return RawCallback(request.body, Headers(request.headers), NOW)


def _reason(raw: RawCallback) -> str:
    with pytest.raises(Rejected) as caught:
        ADAPTER.parse_callback(raw, ACCOUNT)
    return caught.value.reason


def _event(fields: dict[str, Any], *, form: bool = False) -> Any:
    return ADAPTER.parse_callback(_raw(wire.callback(KEYS, fields, form=form)), ACCOUNT)


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
    assert _reason(_raw(wire.callback(KEYS, {**FIELDS, "appId": 9999}))) == "account_mismatch"


@pytest.mark.parametrize(
    "change",
    [{"amount": "3e2"}, {"amount": 1.5}, {"status": "two"}, {"status": True}, {"orderNo": ""}],
)
def test_signed_but_unusable_values_are_malformed(change: dict[str, Any]) -> None:
    """Correctly signed fields that cannot be read as an amount, status or id are malformed."""
    assert _reason(_raw(wire.callback(KEYS, {**FIELDS, **change}))) == "malformed"


def test_forged_callback_is_rejected() -> None:
    """A callback signed with a key that is not the platform's is rejected as bad_signature."""
    request = wire.callback(KEYS, FIELDS, signing_key=NOT_THE_PLATFORMS_KEY)
    assert _reason(_raw(request)) == "bad_signature"


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
    assert _reason(raw) == "malformed"


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


def _only_rejected(raw: RawCallback) -> None:
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(raw, ACCOUNT)


@CHEAP_PROPERTY
@given(st.binary(max_size=300), st.sampled_from(["application/json", "", "x-www-form-urlencoded"]))
def test_arbitrary_bytes_only_reject(body: bytes, content_type: str) -> None:
    """Arbitrary bytes under any Content-Type never raise anything but Rejected."""
    _only_rejected(RawCallback(body, Headers({"Content-Type": content_type}), NOW))


@CHEAP_PROPERTY
@given(json_values)
def test_arbitrary_json_only_rejects(value: Any) -> None:
    """Arbitrary JSON never raises anything but Rejected."""
    body = json.dumps(value).encode()
    _only_rejected(RawCallback(body, Headers({"Content-Type": "application/json"}), NOW))


@CHEAP_PROPERTY
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_arbitrary_forms_only_reject(fields: dict[str, str]) -> None:
    """Arbitrary form fields never raise anything but Rejected."""
    body = urlencode(fields).encode()
    _only_rejected(
        RawCallback(body, Headers({"Content-Type": "application/x-www-form-urlencoded"}), NOW)
    )


@RSA_PROPERTY
@given(st.fixed_dictionaries(dict.fromkeys(FIELDS, json_values), optional={"event": json_values}))
def test_signed_junk_values_only_reject(fields: dict[str, Any]) -> None:
    """Correctly signed callbacks with junk values never raise anything but Rejected."""
    try:
        request = wire.callback(KEYS, fields)
    except (TypeError, ValueError):  # what the platform's side itself cannot sign
        return
    _only_rejected(_raw(request))


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
