"""OPay business API: encrypted and plain webhooks, the ack, and the `qryOrderDetail` query.

Wire format: CONTRACT §4 "opay". RSA primitives live in `providers.rsa_crypto`.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr, field_validator

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
from providers.keys import key_field
from providers.rsa_crypto import decrypt_blocks, encrypt_blocks, sign_sha256, verify_sha256

API_VERSION = "V1.0.1"
QUERY_PATH = "/openApi/order/checkout/qryOrderDetail"
STATUS_MAP: Mapping[str, Status] = {
    "SUCCESS": Status.SUCCEEDED,
    "FAIL": Status.FAILED,
    "CLOSE": Status.CLOSED,
    "CANCEL": Status.CANCELLED,
    "PENDING": Status.PENDING,
}
NOT_FOUND_CODES = frozenset({"00003", "50002"})
BUSY_CODES = frozenset({"10000", "11004", "11005"})
# A_1001 "request expired" means our clock is off; C_1111 "fail to query merchant key" means
# the key is not set up at OPay. Both need an operator, not a retry.
AUTH_CODES = frozenset({"A_1001", "C_1111"})
_MS_DIGITS = re.compile(r"[0-9]{1,18}")
_AMOUNT = re.compile(r"[0-9]{1,30}(\.[0-9]{1,18})?")  # no sign: no payment is negative
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OPayAccount(AccountConfig):
    """One OPay merchant account; key fields hold loaded RSA key objects."""

    client_auth_key: SecretStr
    head_merchant_id: str
    merchant_id: str
    merchant_private_key: rsa.RSAPrivateKey
    provider_public_key: rsa.RSAPublicKey

    _load_keys = field_validator("merchant_private_key", "provider_public_key", mode="before")(
        key_field
    )


@dataclass(frozen=True)
class EncryptedEnvelope:
    """The signed, encrypted webhook's outer JSON (timestamp kept as the signed text)."""

    client_auth_key: str
    timestamp: str
    param_content: str
    sign: str


@dataclass(frozen=True)
class PlainEnvelope:
    """The unsigned webhook: `{"data": {...}}` and the `X-Opay-Tranid` header, if any."""

    data: dict[str, Any]
    tranid: str | None


OPayEnvelope = EncryptedEnvelope | PlainEnvelope


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise Rejected("malformed", f"{key} is not a string")
    return value


def _optional_text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _ms_text(value: object, reason: str = "bad_timestamp") -> str:
    """A ms timestamp as its decimal text; strings of digits and JSON integers are accepted."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _MS_DIGITS.fullmatch(value):
        raise Rejected(reason, "timestamp is not milliseconds")
    return value


def _from_ms(ms: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError as exc:
        raise Rejected("malformed", "time out of range") from exc


def _amount(value: object) -> Decimal | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        raise Rejected("malformed", "amount is not a decimal string")
    return Decimal(text)


def event_from_fields(
    fields: Mapping[str, Any], trust: Trust, tranid: str | None = None
) -> ProviderEvent:
    """The canonical event an OPay order record (callback plaintext or query data) states."""
    status_text = _text(fields, "status")
    status = STATUS_MAP.get(status_text)
    if status is None:
        raise Rejected("malformed", f"unknown status {status_text[:40]!r}")
    merchant_order_no = _text(fields, "outOrderNo")
    if not merchant_order_no:
        raise Rejected("malformed", "outOrderNo is empty")
    order_no = _optional_text(fields, "orderNo")
    event_id = _optional_text(fields, "transactionId") or tranid
    if event_id is None and order_no is None:
        raise Rejected("malformed", "no transactionId, X-Opay-Tranid or orderNo")
    completed = fields.get("completedTime")
    paid_at = None if completed in (None, "") else _ms_text(completed, "malformed")
    return ProviderEvent(
        merchant_order_no=merchant_order_no,
        event_id=event_id or f"{order_no}:{status_text}",
        provider_status=status_text,
        status=status,
        amount=_amount(fields.get("amount")),
        currency=_optional_text(fields, "currency"),
        provider_order_no=order_no,
        paid_at=None if paid_at is None else _from_ms(int(paid_at)),
        trust=trust,
        fields=dict(fields),
    )


def _decrypt_json(key: rsa.RSAPrivateKey, ciphertext: str) -> Any:
    plaintext = decrypt_blocks(key, ciphertext)
    try:
        return json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # cryptography decrypts PKCS#1 v1.5 with implicit rejection (the Marvin mitigation):
        # a block with bad padding yields random bytes instead of an error, so a plaintext
        # that is not JSON is how a failed decryption shows itself.
        raise Rejected("decrypt_failed", "plaintext is not UTF-8 JSON") from exc


def reply_sign_string(reply: Mapping[str, Any]) -> bytes:
    """What OPay signs in a query reply: `k=v` joined by `&`, keys sorted, `sign` and nulls out."""
    parts: list[str] = []
    for key in sorted(reply):
        value = reply[key]
        if key == "sign" or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise Rejected("malformed", f"reply field {key} is not a scalar")
        parts.append(f"{key}={value}")
    return "&".join(parts).encode("utf-8")


class OPay(BaseProvider[OPayAccount, OPayEnvelope]):
    """OPay adapter: the encrypted webhook is trusted on its signature; the plain one never is."""

    name: ClassVar[str] = "opay"
    account_model: ClassVar[type[AccountConfig]] = OPayAccount
    default_trust: ClassVar[Trust] = Trust.SIGNATURE
    ack: ClassVar[Ack] = Ack(200, "application/json", b'{"code":"00000","message":"SUCCESSFUL"}')

    def unwrap(self, raw: RawCallback) -> OPayEnvelope:
        body = load_json_object(raw.body)
        if "paramContent" not in body:
            data = body.get("data")
            if not isinstance(data, dict):
                raise Rejected("malformed", "neither paramContent nor a data object")
            return PlainEnvelope(data=data, tranid=raw.headers.get("X-Opay-Tranid") or None)
        return EncryptedEnvelope(
            client_auth_key=_text(body, "clientAuthKey"),
            timestamp=_ms_text(body.get("timestamp")),
            param_content=_text(body, "paramContent"),
            sign=_text(body, "sign"),
        )

    def authenticate(self, envelope: OPayEnvelope, raw: RawCallback, account: OPayAccount) -> None:
        if isinstance(envelope, PlainEnvelope):
            return  # unsigned: the event is marked confirm_by_query instead
        expected = account.client_auth_key.get_secret_value().encode("utf-8")
        if not hmac.compare_digest(envelope.client_auth_key.encode("utf-8"), expected):
            raise Rejected("bad_client_auth_key")
        # The body's timestamp is the signed one; a header copy is ignored.
        received_ms = (raw.received_at - _EPOCH) // timedelta(milliseconds=1)
        skew_ms = abs(received_ms - int(envelope.timestamp))
        if skew_ms > account.timestamp_tolerance_s * 1000:
            raise Rejected("bad_timestamp", f"{skew_ms} ms from receipt")
        # Verify before decrypting, so forged input never reaches PKCS#1 v1.5 unpadding.
        message = (envelope.param_content + envelope.timestamp).encode("utf-8")
        verify_sha256(account.provider_public_key, message, envelope.sign)

    def open(self, envelope: OPayEnvelope, account: OPayAccount) -> Mapping[str, Any]:
        if isinstance(envelope, PlainEnvelope):
            return envelope.data
        fields = _decrypt_json(account.merchant_private_key, envelope.param_content)
        if not isinstance(fields, dict):
            raise Rejected("malformed", "plaintext is not a JSON object")
        return fields

    def interpret(
        self, fields: Mapping[str, Any], envelope: OPayEnvelope, account: OPayAccount
    ) -> ProviderEvent:
        if isinstance(envelope, PlainEnvelope):
            return event_from_fields(fields, Trust.CONFIRM_BY_QUERY, envelope.tranid)
        return event_from_fields(fields, account.trust or self.default_trust)

    def build_query(self, account: OPayAccount, order: OrderRef, now_ms: int) -> HttpRequest:
        params = {
            "headMerchantId": account.head_merchant_id,
            "merchantId": account.merchant_id,
            "outOrderNo": order.merchant_order_no,
        }
        if order.provider_order_no:
            params["orderNo"] = order.provider_order_no
        timestamp = str(now_ms)
        plaintext = json.dumps(params, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        param_content = encrypt_blocks(account.provider_public_key, plaintext.encode("utf-8"))
        sign = sign_sha256(account.merchant_private_key, (param_content + timestamp).encode())
        body = {"paramContent": param_content, "sign": sign}
        return HttpRequest(
            method="POST",
            url=account.base_url.rstrip("/") + QUERY_PATH,
            headers={
                "Content-Type": "application/json",
                "clientAuthKey": account.client_auth_key.get_secret_value(),
                "version": API_VERSION,
                "bodyFormat": "JSON",
                "timestamp": timestamp,
            },
            body=json.dumps(body, separators=(",", ":")).encode("ascii"),
        )

    def parse_query_reply(self, account: OPayAccount, reply: HttpReply) -> list[ProviderEvent]:
        body = reply_object(reply)
        code = str(body.get("code"))[:40]
        message = f"code {code}: {str(body.get('message'))[:200]}"
        if code == "00000" and 200 <= reply.status < 300:
            return self._found(account, body)
        if code in NOT_FOUND_CODES:
            raise QueryNotFound(message, code=code)
        if code in BUSY_CODES:
            raise QueryTransient(message, code=code)
        raise (QueryAuth if code in AUTH_CODES else QueryPermanent)(message, code=code)

    def _found(self, account: OPayAccount, body: Mapping[str, Any]) -> list[ProviderEvent]:
        try:
            verify_sha256(account.provider_public_key, reply_sign_string(body), _text(body, "sign"))
            data = _decrypt_json(account.merchant_private_key, _text(body, "data"))
            records = data if isinstance(data, list) else [data]
            if not all(isinstance(record, dict) for record in records):
                raise Rejected("malformed", "data is not an order object")
            return [event_from_fields(record, Trust.SIGNATURE) for record in records]
        except Rejected as exc:
            keys_wrong = exc.reason in {"bad_signature", "decrypt_failed"}
            raise (QueryAuth if keys_wrong else QueryPermanent)(str(exc), code=exc.reason) from exc
        except (KeyError, ValueError, TypeError) as exc:
            detail = f"malformed reply: {type(exc).__name__}"
            raise QueryPermanent(detail, code="malformed") from exc
