"""OTGPAY's side of the wire: callbacks (JSON or form) as the platform sends them, and
`/{currency}/collect|pay/query` answers.

Written from CONTRACT §4 with `cryptography` directly (not `providers.otgpay`), so a round
trip through the adapter checks two implementations against each other.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.base import HttpReply, HttpRequest

QUERY_PATHS = ("/collect/query", "/pay/query")
_JSON = {"Content-Type": "application/json"}
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class OTGPayProviderKeys:
    """What the platform holds for one merchant; `app_id`, when set, must match a query's."""

    provider_private_key: rsa.RSAPrivateKey
    merchant_public_key: rsa.RSAPublicKey
    merchant_secret: str
    app_id: int | None = None

    @classmethod
    def from_pem_files(
        cls,
        provider_private: Path,
        merchant_public: Path,
        merchant_secret: str,
        app_id: int | None = None,
    ) -> OTGPayProviderKeys:
        """Keys from the two PEM files the platform's side needs (e.g. the vectors' `keys/`)."""
        private = serialization.load_pem_private_key(provider_private.read_bytes(), None)
        public = serialization.load_pem_public_key(merchant_public.read_bytes())
        if not isinstance(private, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("OTGPAY keys are RSA")
        return cls(private, public, merchant_secret, app_id)


class QueryRefused(Exception):
    """Raised by `read_query` when the platform would refuse the request; carries its code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sign_string(fields: Mapping[str, Any], secret: str) -> str:
    """`k=v&…&key=<secret>`: keys sorted, `sign`, empty and null values left out."""
    pairs = [
        f"{key}={_text(value)}"
        for key, value in sorted(fields.items())
        if key != "sign" and value is not None and value != ""
    ]
    return "&".join([*pairs, f"key={secret}"])


def sign(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """Base64 SHA256withRSA (PKCS#1 v1.5) of the UTF-8 message."""
    raw = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def signed(
    keys: OTGPayProviderKeys,
    fields: Mapping[str, Any],
    *,
    signing_key: rsa.RSAPrivateKey | None = None,
) -> dict[str, Any]:
    """`fields` with `sign` last; `signing_key` forges the signature."""
    unsigned = {k: v for k, v in fields.items() if k != "sign"}
    message = sign_string(unsigned, keys.merchant_secret)
    return {**unsigned, "sign": sign(signing_key or keys.provider_private_key, message)}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def callback(
    keys: OTGPayProviderKeys,
    fields: Mapping[str, Any],
    *,
    form: bool = False,
    path: str = "/callbacks/otgpay",
    signing_key: rsa.RSAPrivateKey | None = None,
) -> HttpRequest:
    """The signed callback for `fields` (appId, currency, orderId, orderNo, amount, fee,
    status, payTime, errorMsg, event?, …): JSON, or form-encoded with every value a string
    (null values left out). `signing_key` forges the signature.
    """
    if not form:
        return HttpRequest(
            "POST", path, dict(_JSON), _json(signed(keys, fields, signing_key=signing_key))
        )
    as_text = {k: _text(v) for k, v in fields.items() if v is not None and k != "sign"}
    body = urlencode(list(signed(keys, as_text, signing_key=signing_key).items()))
    return HttpRequest("POST", path, dict(_FORM), body.encode("ascii"))


def read_query(keys: OTGPayProviderKeys, body: bytes) -> dict[str, Any]:
    """The verified query (`appId, orderId, orderNo?`), or `QueryRefused` as the platform would."""
    try:
        params = json.loads(body)
    except ValueError as exc:
        raise QueryRefused("1002", "Illegal Param") from exc
    if not isinstance(params, dict):
        raise QueryRefused("1002", "Illegal Param")
    if not params.get("appId") or not params.get("orderId") or not params.get("sign"):
        raise QueryRefused("1001", "param is null")
    if keys.app_id is not None and params["appId"] != keys.app_id:
        raise QueryRefused("1002", "Illegal Param")
    try:
        raw_sign = base64.b64decode(params["sign"], validate=True)
        message = sign_string(params, keys.merchant_secret).encode("utf-8")
        keys.merchant_public_key.verify(raw_sign, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise QueryRefused("1002", "Illegal Param") from exc
    return params


def reply_found(
    keys: OTGPayProviderKeys,
    order: Mapping[str, Any],
    *,
    signing_key: rsa.RSAPrivateKey | None = None,
) -> bytes:
    """The `status "1"` answer carrying `order` (orderId, orderNo, amount, status, …) signed."""
    data = signed(keys, order, signing_key=signing_key)
    return _json({"status": "1", "error": "00000000", "msg": "", "data": data})


def reply_error(code: str, msg: str) -> bytes:
    """An error answer: `status "0"`, the code in `error`, no data."""
    return _json({"status": "0", "error": code, "msg": msg, "data": None})


def reply_not_found() -> bytes:
    """The platform's answer for an order it does not know (4013)."""
    return reply_error("4013", "order not exist")


def reply_busy() -> bytes:
    """The platform's "system is busy" answer (1004)."""
    return reply_error("1004", "system is busy")


OrderLookup = Callable[[str, str | None], Mapping[str, Any] | None]


def answer_query(
    keys: OTGPayProviderKeys, request: HttpRequest, lookup: OrderLookup, now_ms: int = 0
) -> HttpReply:
    """The platform's whole answer: `lookup(orderId, orderNo)` gives the order or None.

    `now_ms` is accepted for symmetry with the other providers; OTGPAY signs no time.
    """
    if request.method != "POST" or not urlsplit(request.url).path.endswith(QUERY_PATHS):
        return HttpReply(404, b"not found", {"Content-Type": "text/plain"})
    try:
        params = read_query(keys, request.body)
    except QueryRefused as refused:
        return HttpReply(200, reply_error(refused.code, refused.message), dict(_JSON))
    order_no = params.get("orderNo")
    order = lookup(str(params["orderId"]), order_no if isinstance(order_no, str) else None)
    if order is None:
        return HttpReply(200, reply_not_found(), dict(_JSON))
    return HttpReply(200, reply_found(keys, order), dict(_JSON))
