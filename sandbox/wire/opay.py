"""OPay's side of the wire: webhooks as OPay sends them and `qryOrderDetail` answers.

Written from CONTRACT §4 with `cryptography` directly (not `providers.rsa_crypto`), so a
round trip through the adapter checks two implementations against each other.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.base import Headers, HttpReply, HttpRequest

VERSION = "V1.0.1"
QUERY_PATH = "/openApi/order/checkout/qryOrderDetail"
_CHUNK = 117  # PKCS#1 v1.5 plaintext bytes per block of a 1024-bit key


@dataclass(frozen=True)
class OPayProviderKeys:
    """What OPay holds for one merchant; the ids, when set, must match a query's."""

    provider_private_key: rsa.RSAPrivateKey
    merchant_public_key: rsa.RSAPublicKey
    client_auth_key: str
    head_merchant_id: str | None = None
    merchant_id: str | None = None

    @classmethod
    def from_pem_files(
        cls, provider_private: Path, merchant_public: Path, client_auth_key: str, **ids: str
    ) -> OPayProviderKeys:
        """Keys from the two PEM files OPay's side needs (e.g. the vectors' `keys/`)."""
        private = serialization.load_pem_private_key(provider_private.read_bytes(), None)
        public = serialization.load_pem_public_key(merchant_public.read_bytes())
        if not isinstance(private, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("OPay keys are RSA")
        return cls(private, public, client_auth_key, **ids)


class QueryRefused(Exception):
    """Raised by `read_query` when OPay would refuse the request; carries OPay's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes) -> str:
    """Base64 of PKCS#1 v1.5 blocks over 117-byte chunks, concatenated."""
    chunks = [plaintext[i : i + _CHUNK] for i in range(0, len(plaintext), _CHUNK)] or [b""]
    blocks = [public_key.encrypt(chunk, padding.PKCS1v15()) for chunk in chunks]
    return base64.b64encode(b"".join(blocks)).decode("ascii")


def decrypt(private_key: rsa.RSAPrivateKey, ciphertext_b64: str) -> bytes:
    """Inverse of `encrypt`; raises ValueError on damage."""
    data = base64.b64decode(ciphertext_b64, validate=True)
    size = private_key.key_size // 8
    if not data or len(data) % size:
        raise ValueError("not whole RSA blocks")
    blocks = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(private_key.decrypt(block, padding.PKCS1v15()) for block in blocks)


def sign(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """Base64 SHA256withRSA (PKCS#1 v1.5) of the UTF-8 message."""
    raw = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encrypted_callback(
    keys: OPayProviderKeys,
    fields: Mapping[str, Any],
    timestamp_ms: int,
    *,
    path: str = "/callbacks/opay",
    signing_key: rsa.RSAPrivateKey | None = None,
) -> HttpRequest:
    """The signed, encrypted webhook for `fields`; `signing_key` forges the signature."""
    timestamp = str(timestamp_ms)
    param_content = encrypt(keys.merchant_public_key, _json(dict(fields)))
    signature = sign(signing_key or keys.provider_private_key, param_content + timestamp)
    body = {
        "clientAuthKey": keys.client_auth_key,
        "version": VERSION,
        "bodyFormat": "JSON",
        "timestamp": timestamp,
        "paramContent": param_content,
        "sign": signature,
    }
    headers = {
        "Content-Type": "application/json",
        "clientAuthKey": keys.client_auth_key,
        "timestamp": timestamp,
        "version": VERSION,
        "bodyFormat": "JSON",
    }
    return HttpRequest(method="POST", url=path, headers=headers, body=_json(body))


def plain_callback(
    fields: Mapping[str, Any], tranid: str | None = None, *, path: str = "/callbacks/opay"
) -> HttpRequest:
    """The unsigned webhook `{"data": fields}` with the `X-Opay-Tranid` header when given."""
    headers = {"Content-Type": "application/json"}
    if tranid is not None:
        headers["X-Opay-Tranid"] = tranid
    return HttpRequest("POST", path, headers, _json({"data": dict(fields)}))


def read_query(
    keys: OPayProviderKeys,
    headers: Mapping[str, str],
    body: bytes,
    now_ms: int,
    tolerance_s: int = 300,
) -> dict[str, Any]:
    """The decrypted, verified query parameters, or `QueryRefused` as OPay would answer."""
    head = Headers(headers)
    if head.get("clientAuthKey") != keys.client_auth_key:
        raise QueryRefused("C_1111", "Fail to query merchant key")
    timestamp = head.get("timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 18):
        raise QueryRefused("00004", "Invalid request parameters")
    if abs(now_ms - int(timestamp)) > tolerance_s * 1000:
        raise QueryRefused("A_1001", "Request expired. Please try again.")
    try:
        outer = json.loads(body)
        param_content, signature = outer["paramContent"], outer["sign"]
        merchant_public = keys.merchant_public_key
        raw_sign = base64.b64decode(signature, validate=True)
        message = (param_content + timestamp).encode("utf-8")
        merchant_public.verify(raw_sign, message, padding.PKCS1v15(), hashes.SHA256())
        params = json.loads(decrypt(keys.provider_private_key, param_content))
    except Exception as exc:  # every kind of damage gets the same answer, as at OPay
        raise QueryRefused("00004", "Invalid request parameters") from exc
    if not isinstance(params, dict) or not isinstance(params.get("outOrderNo"), str):
        raise QueryRefused("00004", "Invalid request parameters")
    ids = {"headMerchantId": keys.head_merchant_id, "merchantId": keys.merchant_id}
    for name, expected in ids.items():
        if expected is not None and params.get(name) != expected:
            raise QueryRefused("00004", f"{name} does not match")
    return params


def reply_sign_string(reply: Mapping[str, Any]) -> str:
    """`k=v&…` over the reply's fields, keys sorted, `sign` and nulls left out."""
    return "&".join(
        f"{key}={reply[key]}" for key in sorted(reply) if key != "sign" and reply[key] is not None
    )


def reply_found(
    keys: OPayProviderKeys,
    order: Mapping[str, Any],
    timestamp_ms: int,
    *,
    signing_key: rsa.RSAPrivateKey | None = None,
) -> bytes:
    """The signed `00000` answer carrying `order` encrypted for the merchant."""
    reply: dict[str, Any] = {
        "code": "00000",
        "message": "SUCCESSFUL",
        "timestamp": str(timestamp_ms),
        "data": encrypt(keys.merchant_public_key, _json(dict(order))),
    }
    reply["sign"] = sign(signing_key or keys.provider_private_key, reply_sign_string(reply))
    return _json(reply)


def reply_error(code: str, message: str) -> bytes:
    """An unsigned error answer, as OPay sends for anything but success."""
    return _json({"code": code, "message": message, "data": None})


def reply_not_found() -> bytes:
    """OPay's answer for an order it does not know."""
    return reply_error("00003", "order not exist")


def reply_busy() -> bytes:
    """OPay's "system busy, please try again" answer."""
    return reply_error("10000", "System busy, please try again.")


OrderLookup = Callable[[str, str | None], Mapping[str, Any] | None]


def answer_query(
    keys: OPayProviderKeys, request: HttpRequest, lookup: OrderLookup, now_ms: int
) -> HttpReply:
    """OPay's whole answer to a query: `lookup(outOrderNo, orderNo)` gives the order or None."""
    if request.method != "POST" or not urlsplit(request.url).path.endswith(QUERY_PATH):
        return HttpReply(404, b"not found", {"Content-Type": "text/plain"})
    json_type = {"Content-Type": "application/json"}
    try:
        params = read_query(keys, request.headers, request.body, now_ms)
    except QueryRefused as refused:
        return HttpReply(200, reply_error(refused.code, refused.message), json_type)
    order = lookup(params["outOrderNo"], params.get("orderNo"))
    if order is None:
        return HttpReply(200, reply_not_found(), json_type)
    return HttpReply(200, reply_found(keys, order, now_ms), json_type)
