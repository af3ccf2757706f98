"""OTGPAY / HaiPay (CONTRACT §4): flat JSON or form callbacks signed SHA256withRSA over a
sorted `k=v&…&key=<secret>` string, and `/{currency}/collect|pay/query`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr, field_validator

from providers.base import (
    AccountConfig,
    Ack,
    BaseProvider,
    HttpReply,
    HttpRequest,
    OrderKind,
    OrderRef,
    ProviderEvent,
    QueryTransport,
    RawCallback,
    Status,
    Trust,
    load_json_object,
    reply_object,
)
from providers.errors import (
    QueryAuth,
    QueryError,
    QueryNotFound,
    QueryPermanent,
    QueryTransient,
    Rejected,
)
from providers.keys import key_field
from providers.rsa_crypto import sign_sha256, verify_sha256

# [assumed] seed 001 is silent on payTime's zone; Indonesia (WIB) and Thailand are UTC+7.
PAY_TIME_ZONE = timezone(timedelta(hours=7))
UNKNOWN_STATUS_FLAG = "provider_status_unknown"
_STATUSES: dict[int, tuple[Status, tuple[str, ...]]] = {
    0: (Status.PENDING, ()),
    1: (Status.PENDING, ()),
    2: (Status.SUCCEEDED, ()),
    3: (Status.FAILED, ()),
    4: (Status.SUCCEEDED, ("partial_payment",)),
    5: (Status.SUCCEEDED, ("overpayment",)),
    -1: (Status.PENDING, (UNKNOWN_STATUS_FLAG,)),
}
_INT_TEXT = re.compile(r"-?[0-9]{1,9}")
_AMOUNT_TEXT = re.compile(r"[0-9]{1,30}(\.[0-9]{1,12})?")
_MAX_FORM_FIELDS = 200
_QUERY_ERRORS: dict[str, type[QueryError]] = {
    "1001": QueryPermanent,  # param is null
    "1002": QueryPermanent,  # illegal param
    "1003": QueryTransient,  # system exception
    "1004": QueryTransient,  # system is busy
    "4013": QueryNotFound,  # order not exist ("order not exit")
    "4014": QueryPermanent,  # order is already in a final state
}


class OTGPayAccount(AccountConfig):
    """One OTGPAY merchant account (`[providers.otgpay.<name>]`); keys are loaded objects."""

    app_id: int
    currency: str
    merchant_secret: SecretStr
    merchant_private_key: rsa.RSAPrivateKey
    provider_public_key: rsa.RSAPublicKey

    _load_keys = field_validator("merchant_private_key", "provider_public_key", mode="before")(
        key_field
    )


def _signing_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise ValueError(f"cannot sign a {type(value).__name__} value")


def signing_string(fields: Mapping[str, Any], secret: str) -> str:
    """`k1=v1&k2=v2…&key=<secret>`: every field but `sign`, keys sorted, empty and null left out."""
    parts = [
        f"{key}={_signing_value(fields[key])}"
        for key in sorted(fields)
        if key != "sign" and fields[key] is not None and fields[key] != ""
    ]
    parts.append(f"key={secret}")
    return "&".join(parts)


def verify_fields(key: rsa.RSAPublicKey, fields: Mapping[str, Any], secret: str) -> None:
    """Check the `sign` of a flat field set; raise `Rejected("bad_signature")` if it is wrong."""
    sign = fields.get("sign")
    if not isinstance(sign, str) or not sign:
        raise Rejected("bad_signature", "no sign")
    verify_sha256(key, signing_string(fields, secret).encode("utf-8"), sign)


def parse_form(body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body, read as the form standard reads it (an empty
    `&&` segment skipped, a name without `=` an empty value, which the signature leaves out);
    a repeated name is malformed, not guessed."""
    pairs = parse_qsl(
        body.decode("utf-8"),
        keep_blank_values=True,
        strict_parsing=False,
        errors="strict",
        max_num_fields=_MAX_FORM_FIELDS,
    )
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise Rejected("malformed", "a form field is repeated")
    return fields


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise Rejected("malformed", f"{key} is missing or not a string")
    return value


def _status_code(value: object) -> int:
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejected("malformed", "status is not an integer")
    return value


def _amount(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Decimal(value)
    if isinstance(value, str) and _AMOUNT_TEXT.fullmatch(value):
        return Decimal(value)
    raise Rejected("malformed", "amount is not a decimal string")


def _kind(event: object) -> OrderKind | None:
    if isinstance(event, str) and event.startswith("payout."):
        return OrderKind.PAYOUT
    if isinstance(event, str) and event.startswith("payment."):
        return OrderKind.PAYMENT
    return None


def _paid_at(value: object) -> datetime | None:
    """payTime as aware UTC; None when absent or unreadable (it is informational)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        local = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        return local.replace(tzinfo=PAY_TIME_ZONE).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def fields_event(
    fields: Mapping[str, Any], account: OTGPayAccount, trust: Trust, default_kind: OrderKind | None
) -> ProviderEvent:
    """The canonical event of a verified field set (a callback or a query reply's `data`)."""
    app_id = fields.get("appId")
    if app_id not in (None, "") and str(app_id) != str(account.app_id):
        raise Rejected("account_mismatch", "appId is not this account's")
    code = _status_code(fields.get("status"))
    status, flags = _STATUSES.get(code, (Status.PENDING, (UNKNOWN_STATUS_FLAG,)))
    currency = fields.get("currency")
    order_no = _text(fields, "orderNo")
    return ProviderEvent(
        merchant_order_no=_text(fields, "orderId"),
        event_id=order_no,
        provider_status=str(code),  # "2" whether it came as JSON 2 or form "2"
        status=status,
        amount=_amount(fields.get("amount")),
        currency=(currency if isinstance(currency, str) and currency else account.currency).upper(),
        provider_order_no=order_no,
        paid_at=_paid_at(fields.get("payTime")),
        kind=_kind(fields.get("event")) or default_kind,
        flags=flags,
        trust=trust,
        fields=dict(fields),
    )


class OTGPay(BaseProvider[OTGPayAccount, Mapping[str, Any]]):
    """OTGPAY callbacks (JSON or form-encoded) and collect/pay status queries."""

    name: ClassVar[str] = "otgpay"
    account_model: ClassVar[type[AccountConfig]] = OTGPayAccount
    default_trust: ClassVar[Trust] = Trust.SIGNATURE
    ack: ClassVar[Ack] = Ack(200, "text/plain", b"SUCCESS")

    def unwrap(self, raw: RawCallback) -> Mapping[str, Any]:
        """JSON or form by Content-Type; without a telling one, a body opening `{` is JSON.
        No field at all (an empty or blank body, `{}`) is malformed, as an empty body is for
        the other providers: there is no signature to fail."""
        content_type = raw.headers.get("content-type", "").lower()
        if "x-www-form-urlencoded" in content_type:
            fields = parse_form(raw.body)
        elif "json" in content_type or raw.body.lstrip().startswith(b"{"):
            fields = load_json_object(raw.body)
        else:
            fields = parse_form(raw.body)
        if not fields or not raw.body.strip():
            raise Rejected("malformed", "no fields")
        return fields

    def authenticate(
        self, envelope: Mapping[str, Any], raw: RawCallback, account: OTGPayAccount
    ) -> None:
        secret = account.merchant_secret.get_secret_value()
        verify_fields(account.provider_public_key, envelope, secret)

    def open(self, envelope: Mapping[str, Any], account: OTGPayAccount) -> Mapping[str, Any]:
        return envelope

    def interpret(
        self, fields: Mapping[str, Any], envelope: Mapping[str, Any], account: OTGPayAccount
    ) -> ProviderEvent:
        trust = account.trust or self.default_trust
        return fields_event(fields, account, trust, OrderKind.PAYMENT)

    def build_query(self, account: OTGPayAccount, order: OrderRef, now_ms: int) -> HttpRequest:
        """`{appId, orderId, orderNo?, sign}`; `now_ms` is unused (OTGPAY signs no time)."""
        payload: dict[str, Any] = {"appId": account.app_id, "orderId": order.merchant_order_no}
        if order.provider_order_no:
            payload["orderNo"] = order.provider_order_no
        message = signing_string(payload, account.merchant_secret.get_secret_value())
        payload["sign"] = sign_sha256(account.merchant_private_key, message.encode("utf-8"))
        path = "pay" if order.kind is OrderKind.PAYOUT else "collect"
        return HttpRequest(
            method="POST",
            url=f"{account.base_url.rstrip('/')}/{account.currency.lower()}/{path}/query",
            headers={"Content-Type": "application/json"},
            body=json.dumps(payload, separators=(",", ":")).encode("utf-8"),
        )

    def parse_query_reply(self, account: OTGPayAccount, reply: HttpReply) -> list[ProviderEvent]:
        """The order as one verified event; its `kind` is None (the reply does not say).

        A `data.sign` that does not verify raises `QueryAuth`: the configured keys need an
        operator. Error codes map through `_QUERY_ERRORS`; unknown ones are permanent.
        """
        body = reply_object(reply)
        if str(body.get("status")) != "1":
            code, msg = str(body.get("error")), str(body.get("msg") or "")
            raise _QUERY_ERRORS.get(code, QueryPermanent)(f"error {code}: {msg}", code)
        data = body.get("data")
        try:
            if not isinstance(data, dict):
                raise Rejected("malformed", "reply has no data object")
            verify_fields(
                account.provider_public_key, data, account.merchant_secret.get_secret_value()
            )
            return [fields_event(data, account, account.trust or self.default_trust, None)]
        except Rejected as exc:
            if exc.reason == "bad_signature":
                raise QueryAuth(f"reply failed its signature check: {exc}", exc.reason) from exc
            raise QueryPermanent(f"unusable reply: {exc}", exc.reason) from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            raise QueryPermanent(f"unusable reply: {exc}", "malformed") from exc

    async def query(
        self, transport: QueryTransport, account: OTGPayAccount, order: OrderRef, now_ms: int
    ) -> list[ProviderEvent]:
        """As the base, with each event's `kind` taken from the order that was asked about."""
        events = await super().query(transport, account, order, now_ms)
        return [event if event.kind else replace(event, kind=order.kind) for event in events]
