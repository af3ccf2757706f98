"""OPay status queries: the request as the vectors show it, the reply codes and signatures, and
round trips through OPay's side of the wire."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from pydantic import SecretStr

from providers.base import HttpReply, OrderRef, Status, Trust
from providers.errors import QueryAuth, QueryError, QueryNotFound, QueryPermanent, QueryTransient
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
)


def _query_case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = next(q for q in DATA["queries"] if q["name"] == name)
    return case


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


@PROPERTY
@given(FIELDS)
def test_query_round_trip_property(fields: dict[str, Any]) -> None:
    """Whatever order OPay answers a query with decodes to the same fields."""
    request = ADAPTER.build_query(ACCOUNT, OrderRef(fields["outOrderNo"]), NOW_MS)
    reply = wire.answer_query(KEYS, request, lambda _out, _no: fields, NOW_MS)
    (event,) = ADAPTER.parse_query_reply(ACCOUNT, reply)
    assert dict(event.fields) == fields
