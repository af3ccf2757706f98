"""MTPay's side of the wire: header-signed webhooks as MTPay sends them and order-query answers.

Written from CONTRACT §4 and seed 000 without `providers.mtpay`, so a round trip through the
adapter checks two implementations against each other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from providers.base import Headers, HttpReply, HttpRequest

QUERY_PATH = "/api/v2/merchant/order"
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class MTPayProviderKeys:
    """What MTPay holds for one merchant: the access key and the shared secret."""

    access_key: str
    secret_key: str


def sign(access_key: str, secret_key: str, timestamp: str) -> str:
    """Upper-hex HMAC-SHA256 of `access_key_timestamp` under the secret (seed 000)."""
    digest = hmac.new(secret_key.encode(), f"{access_key}_{timestamp}".encode(), hashlib.sha256)
    return digest.hexdigest().upper()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def callback_request(
    keys: MTPayProviderKeys,
    fields: Mapping[str, Any],
    timestamp_ms: int,
    *,
    path: str = "/callbacks/mtpay",
    secret_key: str | None = None,
) -> HttpRequest:
    """The webhook for `fields` (the order record); `secret_key` forges the signature."""
    timestamp = str(timestamp_ms)
    headers = {
        "Content-Type": "application/json",
        "access_key": keys.access_key,
        "timestamp": timestamp,
        "signature": sign(keys.access_key, secret_key or keys.secret_key, timestamp),
    }
    return HttpRequest(method="POST", url=path, headers=headers, body=_json(dict(fields)))


def check_auth(
    keys: MTPayProviderKeys, headers: Mapping[str, str], now_ms: int, tolerance_s: int = 300
) -> str | None:
    """None when the request's auth headers are good, else the MTPay status code to answer."""
    head = Headers(headers)
    if head.get("access_key") != keys.access_key:
        return "ACCESS_KEY_ERROR"
    timestamp = head.get("timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 18):
        return "TIMESTAMP_ERROR"
    if abs(now_ms - int(timestamp)) > tolerance_s * 1000:
        return "TIMESTAMP_ERROR"
    expected = sign(keys.access_key, keys.secret_key, timestamp)
    if not hmac.compare_digest(head.get("signature", "").encode(), expected.encode()):
        return "SIGNATURE_ERROR"
    return None


def envelope(data: object, status_code: str = "SUCCESS", message: str = "") -> bytes:
    """MTPay's unified response structure, keys in the documented order."""
    return _json(
        {
            "data": data,
            "isSuccess": status_code == "SUCCESS",
            "statusCode": status_code,
            "message": message,
            "version": "2.0",
        }
    )


def reply_found(order: Mapping[str, Any]) -> bytes:
    """The answer carrying the order record."""
    return envelope(dict(order))


def reply_not_found() -> bytes:
    """MTPay's answer for an order it does not know."""
    return envelope(None, "PARAMETER_ERROR", "order not found")


def reply_error(status_code: str, message: str = "") -> bytes:
    """An error answer named by its status code (e.g. `SYSTEM_ERROR` for busy)."""
    return envelope(None, status_code, message)


OrderLookup = Callable[[str], Mapping[str, Any] | None]


def answer_query(
    keys: MTPayProviderKeys, request: HttpRequest, lookup: OrderLookup, now_ms: int
) -> HttpReply:
    """MTPay's whole answer to an order query: `lookup(merchantOrderNo)` gives the order or None."""
    url = urlsplit(request.url)
    if request.method != "GET" or not url.path.endswith(QUERY_PATH):
        return HttpReply(404, b"not found", {"Content-Type": "text/plain"})
    refused = check_auth(keys, request.headers, now_ms)
    if refused is not None:
        return HttpReply(200, reply_error(refused), _JSON)
    numbers = parse_qs(url.query).get("merchantOrderNo")
    if not numbers:
        return HttpReply(200, reply_error("PARAMETER_ERROR", "merchantOrderNo is required"), _JSON)
    order = lookup(numbers[0])
    if order is None:
        return HttpReply(200, reply_not_found(), _JSON)
    return HttpReply(200, reply_found(order), _JSON)
