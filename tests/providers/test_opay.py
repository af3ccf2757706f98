"""OPay adapter: the independent vectors, round trips through OPay's side of the wire, junk."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from providers.base import Headers, HttpReply, HttpRequest, OrderRef, RawCallback, Status, Trust
from providers.errors import (
    QueryAuth,
    QueryError,
    QueryNotFound,
    QueryPermanent,
    QueryTransient,
    Rejected,
)
from providers.opay import OPay, OPayAccount
from sandbox.wire import opay as wire
from tests.providers import vectors

DATA = vectors.load("opay")
ACCOUNT: OPayAccount = vectors.account("opay", OPayAccount)
ADAPTER = OPay()
KEYS = wire.OPayProviderKeys.from_pem_files(
    vectors.VECTORS / "keys" / "opay-provider-private.pem",
    vectors.VECTORS / "keys" / "opay-merchant-public.pem",
    ACCOUNT.client_auth_key.get_secret_value(),
    head_merchant_id=ACCOUNT.head_merchant_id,
    merchant_id=ACCOUNT.merchant_id,
)
NOW_MS = 1_700_000_000_000
NOT_OPAYS_KEY = ACCOUNT.merchant_private_key  # any RSA key but OPay's forges a signature
PROPERTY = settings(max_examples=150, deadline=None, database=None)
ORDER = {
    "outOrderNo": "M1",
    "orderNo": "231114145500000009",
    "transactionId": "231114145500000009T",
    "status": "SUCCESS",
    "amount": "300.00",
    "currency": "NGN",
    "completedTime": "1699999998000",
}


def _at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _raw(request: HttpRequest, received_ms: int = NOW_MS + 1234) -> RawCallback:
    headers = Headers(dict(request.headers))
    return RawCallback(body=request.body, headers=headers, received_at=_at(received_ms))


def _junk_raw(body: bytes, headers: dict[str, str] | None = None) -> RawCallback:
    return RawCallback(body=body, headers=Headers(headers or {}), received_at=_at(NOW_MS + 1234))


def _query_case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = next(q for q in DATA["queries"] if q["name"] == name)
    return case


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


# -- status query ---------------------------------------------------------------------------------
def _merchant_public() -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(
        (vectors.VECTORS / "keys" / "opay-merchant-public.pem").read_bytes()
    )
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def test_query_request_matches_example() -> None:
    """The query decrypts to the vectors' plaintext, its sign verifies, and headers match."""
    example = _query_case("qryOrderDetail")
    request = ADAPTER.build_query(ACCOUNT, OrderRef("M20231114001"), NOW_MS)
    assert request.method == example["request"]["method"]
    assert request.url == ACCOUNT.base_url + example["request"]["path"]
    assert dict(request.headers) == example["request"]["headers"]
    body = json.loads(request.body)
    assert list(body) == ["paramContent", "sign"]
    plaintext = wire.decrypt(KEYS.provider_private_key, body["paramContent"])
    assert plaintext.decode() == example["paramContent_plaintext"]
    message = (body["paramContent"] + "1700000000000").encode()
    signature = base64.b64decode(body["sign"])
    _merchant_public().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_query_request_includes_provider_order_no_sorted() -> None:
    """A known OPay orderNo is sent too, keys still sorted."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("M1", provider_order_no="2311"), NOW_MS)
    plaintext = wire.decrypt(KEYS.provider_private_key, json.loads(request.body)["paramContent"])
    assert plaintext.decode() == (
        '{"headMerchantId":"256620000000001","merchantId":"256620000000002",'
        '"orderNo":"2311","outOrderNo":"M1"}'
    )


@pytest.mark.parametrize("name", ["found", "not_found", "bad_signature"])
def test_query_reply_vector(name: str) -> None:
    """Vector replies decode to their fields or raise the error class their code implies."""
    case = _query_case(name)
    reply = HttpReply(200, case["body"].encode())
    if case["expect"]["verified"]:
        (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
        assert dict(event.fields) == case["expect"]["fields"]
        assert event.trust == Trust(case["expect"]["trust"])
        return
    error = {"not_found": QueryNotFound, "bad_signature": QueryAuth}[name]
    with pytest.raises(error) as info:
        ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert info.value.code in case["expect"]["reason"]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b'{"code":"50002","message":"no such order","data":null}', QueryNotFound),
        (200, b'{"code":"10000","message":"System busy","data":null}', QueryTransient),
        (200, b'{"code":"11004","message":"blocked","data":null}', QueryTransient),
        (200, b'{"code":"11005","message":"null data","data":null}', QueryTransient),
        (200, b'{"code":"A_1001","message":"Request expired","data":null}', QueryAuth),
        (200, b'{"code":"C_1111","message":"merchant key","data":null}', QueryAuth),
        (200, b'{"code":"00004","message":"Invalid params","data":null}', QueryPermanent),
        (200, b'{"code":["00000"]}', QueryPermanent),
        (200, b'{"code":"00000","message":"SUCCESSFUL","data":null}', QueryPermanent),
        (200, b"<html>oops</html>", QueryPermanent),
        (503, b"", QueryTransient),
        (429, b"", QueryTransient),
        (404, b"not here", QueryPermanent),
    ],
)
def test_query_reply_codes(status: int, body: bytes, error: type[QueryError]) -> None:
    """Reply codes map to not-found, retry, operator action or permanent failure."""
    with pytest.raises(error):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, body))


def _lookup(out_order_no: str, order_no: str | None) -> dict[str, Any] | None:
    return {**ORDER, "outOrderNo": out_order_no} if out_order_no.startswith("M") else None


def test_query_round_trip_found() -> None:
    """build_query → OPay's answer → parse_query_reply gives the order OPay holds."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("M77"), NOW_MS)
    reply = wire.answer_query(KEYS, request, _lookup, NOW_MS + 50)
    (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert dict(event.fields) == {**ORDER, "outOrderNo": "M77"}
    assert event.status == Status.SUCCEEDED
    assert event.trust == Trust.SIGNATURE


def test_query_round_trip_not_found_and_busy() -> None:
    """OPay's not-found and busy answers raise QueryNotFound and QueryTransient."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef("X1"), NOW_MS)
    with pytest.raises(QueryNotFound):
        ADAPTER.parse_query_reply(ACCOUNT, wire.answer_query(KEYS, request, _lookup, NOW_MS))
    with pytest.raises(QueryTransient):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(200, wire.reply_busy()))


def test_query_round_trip_refused_credentials() -> None:
    """A query with the wrong clientAuthKey is refused by OPay and surfaces as QueryAuth."""
    account = ACCOUNT.model_copy(update={"client_auth_key": SecretStr("wrong")})
    request = ADAPTER.build_query(account, OrderRef("M1"), NOW_MS)
    with pytest.raises(QueryAuth):
        ADAPTER.parse_query_reply(ACCOUNT, wire.answer_query(KEYS, request, _lookup, NOW_MS))


def test_query_reply_signed_by_another_key_is_refused() -> None:
    """A found reply not signed by OPay's key is QueryAuth with code bad_signature."""
    body = wire.reply_found(KEYS, ORDER, NOW_MS, signing_key=NOT_OPAYS_KEY)
    with pytest.raises(QueryAuth) as info:
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(200, body))
    assert info.value.code == "bad_signature"


# -- account configuration -----------------------------------------------------------------------
def _table(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {**DATA["account"], **changes}
    return table


def test_account_accepts_pem_text_and_base64_der() -> None:
    """Keys may be given as PEM text or base64 DER as well as a path."""
    pem = (vectors.VECTORS / "keys" / "opay-merchant-private.pem").read_text()
    der = ACCOUNT.provider_public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    table = _table(merchant_private_key=pem, provider_public_key=base64.b64encode(der).decode())
    account = OPayAccount.model_validate(table)
    expected = ACCOUNT.provider_public_key.public_numbers()
    assert account.provider_public_key.public_numbers() == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"provider_public_key": "keys/missing.pem"},
        {"merchant_private_key": "bm90IGEga2V5"},
        {"unknown_setting": 1},
    ],
)
def test_account_refuses_bad_tables(changes: dict[str, Any]) -> None:
    """A missing key file, a non-key, or an unknown setting is a validation error."""
    with pytest.raises(ValidationError):
        OPayAccount.model_validate(_table(**changes), context={"base_dir": vectors.VECTORS})


def test_account_repr_hides_client_auth_key() -> None:
    """The clientAuthKey never appears in the account's repr."""
    assert ACCOUNT.client_auth_key.get_secret_value() not in repr(ACCOUNT)


# -- properties -----------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
ENVELOPES = st.fixed_dictionaries(
    {
        "clientAuthKey": JSON | st.just(KEYS.client_auth_key),
        "timestamp": JSON | st.just(str(NOW_MS)),
        "paramContent": JSON | B64,
        "sign": JSON | B64,
    },
    optional={"version": JSON, "bodyFormat": JSON},
)
PLAINS = st.fixed_dictionaries({"data": JSON | st.dictionaries(st.sampled_from(list(ORDER)), JSON)})
HEADER_NAMES = st.sampled_from(["X-Opay-Tranid", "timestamp", "clientAuthKey"]) | st.text()
HEADERS = st.dictionaries(HEADER_NAMES, st.text())


def _only_rejected(body: bytes, headers: dict[str, str] | None = None) -> None:
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(_junk_raw(body, headers), ACCOUNT)


@PROPERTY
@given(st.binary())
def test_arbitrary_bytes_only_raise_rejected(body: bytes) -> None:
    """Any byte string as a body either parses or raises Rejected, nothing else."""
    _only_rejected(body)


@PROPERTY
@given(JSON, HEADERS)
def test_arbitrary_json_only_raises_rejected(value: Any, headers: dict[str, str]) -> None:
    """Any JSON value as a body, with any headers, either parses or raises Rejected."""
    _only_rejected(json.dumps(value).encode(), headers)


@PROPERTY
@given(ENVELOPES | PLAINS, HEADERS)
def test_right_keys_junk_values_only_raise_rejected(
    body: dict[str, Any], headers: dict[str, str]
) -> None:
    """Envelopes with the right keys and junk values either parse or raise Rejected."""
    _only_rejected(json.dumps(body).encode(), headers)


@PROPERTY
@given(st.binary() | JSON.map(lambda v: json.dumps(v).encode()), st.integers(100, 599))
def test_arbitrary_query_replies_only_raise_query_errors(body: bytes, status: int) -> None:
    """Any reply body and HTTP status either parses or raises a QueryError subclass."""
    with contextlib.suppress(QueryError):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, body))


TEXT = st.text(max_size=60)
FIELDS = st.fixed_dictionaries(
    {
        "outOrderNo": TEXT.filter(bool) | st.just('M/1\\2"3'),
        "orderNo": TEXT.filter(bool),
        "status": st.sampled_from(["SUCCESS", "FAIL", "CLOSE", "CANCEL", "PENDING"]),
        "amount": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
        "currency": st.sampled_from(["NGN", "", "USD"]),
    },
    optional={"transactionId": TEXT, "completedTime": st.integers(0, 2**41).map(str), "note": TEXT},
)


@PROPERTY
@given(FIELDS)
def test_encrypted_round_trip(fields: dict[str, Any]) -> None:
    """Whatever OPay signs and encrypts (unicode, slashes, empty strings) decodes unchanged."""
    event = ADAPTER.parse_callback(_raw(wire.encrypted_callback(KEYS, fields, NOW_MS)), ACCOUNT)
    assert dict(event.fields) == fields
    assert event.amount == Decimal(fields["amount"])


@PROPERTY
@given(FIELDS)
def test_query_round_trip_property(fields: dict[str, Any]) -> None:
    """Whatever order OPay answers a query with decodes to the same fields."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef(fields["outOrderNo"]), NOW_MS)
    reply = wire.answer_query(KEYS, request, lambda _out, _no: fields, NOW_MS)
    (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert dict(event.fields) == fields


JUNK_ORDERS = JSON | st.fixed_dictionaries(
    {}, optional={key: JSON | st.just(value) for key, value in ORDER.items()}
)


@PROPERTY
@given(JUNK_ORDERS)
def test_signed_junk_plaintext_only_raises_rejected(plaintext: Any) -> None:
    """Correctly signed and encrypted junk plaintext either parses or raises Rejected."""
    timestamp = str(NOW_MS)
    param_content = wire.encrypt(KEYS.merchant_public_key, json.dumps(plaintext).encode())
    body = {
        "clientAuthKey": KEYS.client_auth_key,
        "timestamp": timestamp,
        "paramContent": param_content,
        "sign": wire.sign(KEYS.provider_private_key, param_content + timestamp),
    }
    _only_rejected(json.dumps(body).encode())
