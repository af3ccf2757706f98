"""MonetaPay adapter: the independent vectors, round trips through MonetaPay's side, junk."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.base import Headers, HttpReply, HttpRequest, OrderRef, RawCallback, Status, Trust
from providers.errors import (
    QueryAuth,
    QueryError,
    QueryNotFound,
    QueryPermanent,
    QueryTransient,
    Rejected,
)
from providers.monetapay import UNKNOWN_STATUS_FLAG, MonetaPay, MonetaPayAccount
from sandbox.wire import monetapay as wire
from tests.providers import vectors

DATA = vectors.load("monetapay")
ACCOUNT: MonetaPayAccount = vectors.account("monetapay", MonetaPayAccount)
ADAPTER = MonetaPay()
KEYS = wire.MonetaPayProviderKeys(
    token=ACCOUNT.token.get_secret_value(),
    aes_key=ACCOUNT.aes_key.get_secret_value(),
    aes_iv=ACCOUNT.aes_iv,
    partner_key=ACCOUNT.partner_key,
    mch_id=ACCOUNT.mch_id,
    appid=ACCOUNT.appid,
)
NOW_MS = 1_700_000_001_234
TIMESTAMP = 1_700_000_000
PROPERTY = settings(max_examples=200, deadline=None, database=None)
RECORD: dict[str, Any] = {
    "order_no": "MP1",
    "mch_order_no": "M1",
    "status": 1,
    "comeback_number": "880812345678",
    "amount": 50000,
    "pay_time": "2023-11-14 05:13:20",
}
CALLBACKS = DATA["callbacks"]
REPLIES = [q for q in DATA["queries"] if q["kind"] == "reply"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _raw(request: HttpRequest) -> RawCallback:
    return RawCallback(
        request.body, Headers(request.headers), datetime.fromtimestamp(NOW_MS / 1000, UTC)
    )


def _body_raw(body: bytes) -> RawCallback:
    return _raw(
        HttpRequest("POST", "/callbacks/monetapay", {"Content-Type": "application/json"}, body)
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
        _raw(wire.callback(KEYS, {**RECORD, "pay_time": pay_time}, TIMESTAMP)), ACCOUNT
    )
    assert event.paid_at is None
    assert event.status is Status.SUCCEEDED


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


def test_callback_round_trip() -> None:
    """A callback built by MonetaPay's side decodes to the record it was built from."""
    event = ADAPTER.parse_callback(_raw(wire.callback(KEYS, RECORD, TIMESTAMP)), ACCOUNT)
    assert dict(event.fields) == {**RECORD, "sign": event.fields["sign"], "timestamp": TIMESTAMP}
    assert (event.status, event.amount, event.kind, event.flags) == (
        Status.SUCCEEDED,
        Decimal(50000),
        None,
        (),
    )


def test_forged_callback_is_rejected() -> None:
    """A callback signed with another token is rejected as bad_signature."""
    assert _reason(_raw(wire.callback(KEYS, RECORD, TIMESTAMP, token="forged"))) == "bad_signature"


@pytest.mark.parametrize("amount", [True, 1.5, "50000", -1, None])
def test_non_integer_amount_is_malformed(amount: object) -> None:
    """A correctly signed record whose amount is not a non-negative integer is malformed."""
    assert (
        _reason(_raw(wire.callback(KEYS, {**RECORD, "amount": amount}, TIMESTAMP))) == "malformed"
    )


def test_unknown_status_is_pending_and_flagged() -> None:
    """A status outside 0/1/2 is kept as pending with a review flag rather than guessed."""
    event = ADAPTER.parse_callback(
        _raw(wire.callback(KEYS, {**RECORD, "status": 7}, TIMESTAMP)), ACCOUNT
    )
    assert (event.status, event.flags, event.provider_status) == (
        Status.PENDING,
        (UNKNOWN_STATUS_FLAG,),
        "7",
    )


def test_trust_follows_the_account() -> None:
    """An account configured for confirm_by_query marks its events so."""
    account = ACCOUNT.model_copy(update={"trust": Trust.CONFIRM_BY_QUERY})
    event = ADAPTER.parse_callback(_raw(wire.callback(KEYS, RECORD, TIMESTAMP)), account)
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


def _only_rejected(raw: RawCallback) -> None:
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(raw, ACCOUNT)


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_reject(body: bytes) -> None:
    """Arbitrary bytes never raise anything but Rejected."""
    _only_rejected(_body_raw(body))


@PROPERTY
@given(
    json_values | st.fixed_dictionaries({"data": st.fixed_dictionaries({"en_data": json_values})})
)
def test_arbitrary_json_only_rejects(value: Any) -> None:
    """Arbitrary JSON, including a data.en_data of any type, never raises anything but Rejected."""
    _only_rejected(_body_raw(json.dumps(value).encode()))


@PROPERTY
@given(st.fixed_dictionaries(dict.fromkeys(RECORD, json_values), optional={"extra": json_values}))
def test_signed_junk_values_only_reject(record: dict[str, Any]) -> None:
    """Correctly encrypted and signed records with junk values never raise anything but Rejected."""
    _only_rejected(_raw(wire.callback(KEYS, record, TIMESTAMP)))


@PROPERTY
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_decrypted_junk_objects_only_reject(record: dict[str, Any]) -> None:
    """Any object inside a valid ciphertext, signed or not, never raises anything but Rejected."""
    en_data = wire.encrypt(KEYS, wire.php_json(record))
    _only_rejected(_body_raw(json.dumps({"data": {"en_data": en_data}}).encode()))


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
    event = ADAPTER.parse_callback(_raw(wire.callback(KEYS, record, TIMESTAMP)), ACCOUNT)
    assert {k: v for k, v in event.fields.items() if k not in ("sign", "timestamp")} == record
    assert event.event_id == record["order_no"]
    assert event.amount == Decimal(record["amount"])
