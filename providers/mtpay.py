"""MTPay: header-signed webhooks (HMAC over access key and timestamp), the ack, and the order query.

Wire format: CONTRACT §4 "mtpay". The signature does not cover the body, hence confirm_by_query.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import SecretStr

from providers.base import (
    AccountConfig,
    Ack,
    BaseProvider,
    HttpReply,
    HttpRequest,
    OrderRef,
    ProviderEvent,
    RawCallback,
    Status,
    Trust,
    load_json_object,
    reply_object,
)
from providers.errors import QueryAuth, QueryNotFound, QueryPermanent, QueryTransient, Rejected

QUERY_PATH = "/api/v2/merchant/order"
AUTH_HEADERS = ("access_key", "timestamp", "signature")
STATUS_MAP: Mapping[str, Status] = {
    "SUCCESS": Status.SUCCEEDED,
    "FAILED": Status.FAILED,
    "EXPIRED": Status.CLOSED,
    "CANCELLED": Status.CANCELLED,
    "PENDING": Status.PENDING,
}
AUTH_CODES = frozenset(
    {"ACCESS_KEY_ERROR", "SIGNATURE_ERROR", "TIMESTAMP_ERROR", "ACCOUNT_STATUS_ERROR"}
)
TRANSIENT_CODES = frozenset({"SYSTEM_ERROR", "SYSTEM_BUSY"})
_MS_DIGITS = re.compile(r"[0-9]{1,18}")
_AMOUNT = re.compile(r"[0-9]{1,30}(\.[0-9]{1,18})?")  # no sign: no payment is negative
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MTPayAccount(AccountConfig):
    """One MTPay merchant account: the access key (an identifier) and the signing secret."""

    access_key: str
    secret_key: SecretStr


def signature(access_key: str, secret: str, timestamp: str) -> str:
    """MTPay's request signature: upper-hex HMAC-SHA256(secret, access_key + "_" + timestamp)."""
    message = f"{access_key}_{timestamp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().upper()


def auth_headers(account: MTPayAccount, timestamp_ms: int) -> dict[str, str]:
    """The three authentication headers MTPay expects on every request."""
    timestamp = str(timestamp_ms)
    secret = account.secret_key.get_secret_value()
    return {
        "access_key": account.access_key,
        "timestamp": timestamp,
        "signature": signature(account.access_key, secret, timestamp),
    }


@dataclass(frozen=True)
class MTPayEnvelope:
    """The authentication headers and the (unsigned) JSON body of one webhook."""

    access_key: str
    timestamp: str
    signature: str
    body: dict[str, Any]


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise Rejected("malformed", f"{key} is not a non-empty string")
    return value


def _amount(value: object) -> Decimal | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        raise Rejected("malformed", "depositAmount is not a decimal string")
    return Decimal(text)


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _MS_DIGITS.fullmatch(text):
        raise Rejected("malformed", "updatedAt is not milliseconds")
    try:
        return _EPOCH + timedelta(milliseconds=int(text))
    except OverflowError as exc:
        raise Rejected("malformed", "updatedAt out of range") from exc


def event_from_fields(fields: Mapping[str, Any], trust: Trust) -> ProviderEvent:
    """The canonical event an MTPay order record (webhook body or query `data`) states."""
    status_text = fields.get("status")
    status = STATUS_MAP.get(status_text) if isinstance(status_text, str) else None
    if status is None or not isinstance(status_text, str):
        raise Rejected("malformed", f"unknown status {str(status_text)[:40]!r}")
    currency = fields.get("fiatCurrency")
    order_no = _text(fields, "orderNo")
    return ProviderEvent(
        merchant_order_no=_text(fields, "merchantOrderNo"),
        event_id=order_no,
        provider_status=status_text,
        status=status,
        amount=_amount(fields.get("depositAmount")),
        currency=currency if isinstance(currency, str) and currency else None,
        provider_order_no=order_no,
        paid_at=_time(fields.get("updatedAt")),
        trust=trust,
        fields=dict(fields),
    )


class MTPay(BaseProvider[MTPayAccount, MTPayEnvelope]):
    """MTPay adapter: a verified webhook only triggers a status query, whose answer is applied."""

    name: ClassVar[str] = "mtpay"
    account_model: ClassVar[type[AccountConfig]] = MTPayAccount
    default_trust: ClassVar[Trust] = Trust.CONFIRM_BY_QUERY
    ack: ClassVar[Ack] = Ack(
        200,
        "application/json",
        b'{"data":null,"isSuccess":true,"statusCode":"SUCCESS","message":"","version":"2.0"}',
    )

    def unwrap(self, raw: RawCallback) -> MTPayEnvelope:
        missing = [name for name in AUTH_HEADERS if not raw.headers.get(name)]
        if missing:
            raise Rejected("missing_auth_headers", ", ".join(missing))
        return MTPayEnvelope(
            access_key=raw.headers["access_key"],
            timestamp=raw.headers["timestamp"].strip(),
            signature=raw.headers["signature"].strip(),
            body=load_json_object(raw.body),
        )

    def authenticate(
        self, envelope: MTPayEnvelope, raw: RawCallback, account: MTPayAccount
    ) -> None:
        given = envelope.access_key.encode("utf-8")
        if not hmac.compare_digest(given, account.access_key.encode("utf-8")):
            raise Rejected("bad_access_key")
        if not _MS_DIGITS.fullmatch(envelope.timestamp):
            raise Rejected("bad_timestamp", "timestamp is not milliseconds")
        received_ms = (raw.received_at - _EPOCH) // timedelta(milliseconds=1)
        skew_ms = abs(received_ms - int(envelope.timestamp))
        if skew_ms > account.timestamp_tolerance_s * 1000:
            raise Rejected("bad_timestamp", f"{skew_ms} ms from receipt")
        secret = account.secret_key.get_secret_value()
        expected = signature(account.access_key, secret, envelope.timestamp).encode("ascii")
        if not hmac.compare_digest(envelope.signature.upper().encode("utf-8"), expected):
            raise Rejected("bad_signature")

    def open(self, envelope: MTPayEnvelope, account: MTPayAccount) -> Mapping[str, Any]:
        return envelope.body

    def interpret(
        self, fields: Mapping[str, Any], envelope: MTPayEnvelope, account: MTPayAccount
    ) -> ProviderEvent:
        return event_from_fields(fields, account.trust or self.default_trust)

    def build_query(self, account: MTPayAccount, order: OrderRef, now_ms: int) -> HttpRequest:
        query = "merchantOrderNo=" + quote(order.merchant_order_no, safe="")
        return HttpRequest(
            method="GET",
            url=f"{account.base_url.rstrip('/')}{QUERY_PATH}?{query}",
            headers=auth_headers(account, now_ms),
            body=b"",
        )

    def parse_query_reply(self, account: MTPayAccount, reply: HttpReply) -> list[ProviderEvent]:
        envelope = reply_object(reply)
        code = str(envelope.get("statusCode"))[:60]
        message = str(envelope.get("message"))[:200]
        if code == "SUCCESS" and envelope.get("isSuccess") is True:
            return [self._found(envelope.get("data"))]
        if code == "PARAMETER_ERROR" and "not found" in message.lower():
            raise QueryNotFound(f"{code}: {message}", code=code)
        if code in TRANSIENT_CODES:
            raise QueryTransient(f"{code}: {message}", code=code)
        error = QueryAuth if code in AUTH_CODES else QueryPermanent
        raise error(f"{code}: {message}", code=code)

    def _found(self, data: object) -> ProviderEvent:
        if not isinstance(data, dict):
            raise QueryPermanent("SUCCESS without an order in data", code="malformed")
        try:
            # The reply comes over TLS from MTPay itself: its status is authoritative.
            return event_from_fields(data, Trust.SIGNATURE)
        except Rejected as exc:
            raise QueryPermanent(str(exc), code=exc.reason) from exc
