"""MonetaPay (CONTRACT §4): AES-128-CBC callbacks signed with a double MD5 over PHP-style JSON.

Owns the account model, AES and signing helpers (shared with the sandbox), the callback hooks,
and `/trade/query` (its request and its list-of-records reply).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import SecretStr, field_validator

from providers import phpjson
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
from providers.errors import (
    QueryAuth,
    QueryError,
    QueryNotFound,
    QueryPermanent,
    QueryTransient,
    Rejected,
)

CURRENCY = "IDR"
PAY_TIME_ZONE = timezone(timedelta(hours=7))  # [assumed] WIB, Jakarta time
UNKNOWN_STATUS_FLAG = "provider_status_unknown"
_STATUSES = {0: Status.PENDING, 1: Status.SUCCEEDED, 2: Status.FAILED}
_UNSIGNED = ("sign", "timestamp")


class MonetaPayAccount(AccountConfig):
    """One MonetaPay merchant account (`[providers.monetapay.<name>]`)."""

    mch_id: int
    appid: int
    partner_key: str
    token: SecretStr
    aes_key: SecretStr
    aes_iv: str

    @field_validator("aes_key", "aes_iv")
    @classmethod
    def _sixteen_bytes(cls, value: SecretStr | str) -> SecretStr | str:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if len(text.encode("utf-8")) != 16:
            raise ValueError("must be 16 characters (AES-128; the characters are the raw bytes)")
        return value


# crypto shared with the sandbox's provider side
def _cipher(key: str, iv: str) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8")))


def aes_encrypt(key: str, iv: str, plaintext: bytes) -> str:
    """Base64 of AES-128-CBC with PKCS#7 padding, key and IV used as their UTF-8 bytes."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = _cipher(key, iv).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def aes_decrypt(key: str, iv: str, ciphertext_b64: str) -> bytes:
    """Inverse of `aes_encrypt`; raise `Rejected("decrypt_failed")` on any damage."""
    try:
        data = base64.b64decode(ciphertext_b64, validate=True)
        if not data or len(data) % 16:
            raise ValueError("not a whole number of AES blocks")
        decryptor = _cipher(key, iv).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (binascii.Error, ValueError) as exc:
        raise Rejected("decrypt_failed", str(exc)) from exc


def sign_fields(token: str, fields: Mapping[str, Any], timestamp: int | str) -> str:
    """Lower-hex md5(md5(token*|*J@!@timestamp)), J the key-sorted PHP JSON of `fields`."""
    j = phpjson.encode(dict(fields), sort_keys=True)
    message = f"{token}*|*{j}@!@{timestamp}".encode()
    # MonetaPay's scheme is double MD5; it is the provider's choice, not ours.
    inner = hashlib.md5(message).hexdigest()  # noqa: S324
    return hashlib.md5(inner.encode("ascii")).hexdigest()  # noqa: S324


def verify_record(token: str, record: Mapping[str, Any]) -> None:
    """Check a decrypted record's `sign` (constant time); raise `Rejected` if it is wrong."""
    sign = record.get("sign")
    timestamp = record.get("timestamp")
    if not isinstance(sign, str) or not sign:
        raise Rejected("bad_signature", "no sign")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | str):
        raise Rejected("malformed", "timestamp is not an integer or string")
    unsigned = {key: value for key, value in record.items() if key not in _UNSIGNED}
    expected = sign_fields(token, unsigned, timestamp)
    if not hmac.compare_digest(expected.encode("ascii"), sign.encode("utf-8", "surrogatepass")):
        raise Rejected("bad_signature")


def decrypt_json(key: str, iv: str, ciphertext_b64: str) -> dict[str, Any]:
    """`en_data` as a JSON object; garbage bytes are `decrypt_failed`, bad JSON `malformed`."""
    plaintext = aes_decrypt(key, iv, ciphertext_b64)
    try:
        value = json.loads(plaintext.decode("utf-8"))
    except UnicodeDecodeError as exc:  # what a wrong key that happens to unpad gives
        raise Rejected("decrypt_failed", "plaintext is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise Rejected("malformed", "plaintext is not JSON") from exc
    if not isinstance(value, dict):
        raise Rejected("malformed", "plaintext is not a JSON object")
    return value


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise Rejected("malformed", f"{key} is missing or not a string")
    return value


def _integer(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejected("malformed", f"{key} is not an integer")
    return value


def local_time_to_utc(value: object, zone: timezone) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS` in `zone` as aware UTC; None when absent or unreadable.

    Lenient on purpose: the time is informational; a signed payment must not be lost over
    PHP's `0000-00-00 00:00:00`."""
    if not isinstance(value, str) or not value:
        return None
    try:
        local = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        return local.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def record_event(record: Mapping[str, Any], trust: Trust) -> ProviderEvent:
    """The canonical event of one verified record (callback plaintext or query list item)."""
    order_no = _text(record, "order_no")
    code = _integer(record, "status")
    amount = _integer(record, "amount")
    if amount < 0:
        raise Rejected("malformed", "negative amount")
    return ProviderEvent(
        merchant_order_no=_text(record, "mch_order_no"),
        event_id=order_no,
        provider_status=str(code),
        status=_STATUSES.get(code, Status.PENDING),
        amount=Decimal(amount),
        currency=CURRENCY,
        provider_order_no=order_no,
        paid_at=local_time_to_utc(record.get("pay_time"), PAY_TIME_ZONE),
        kind=None,  # a repayment of a static VA looks like a payment; the ledger knows which
        flags=() if code in _STATUSES else (UNKNOWN_STATUS_FLAG,),
        trust=trust,
        fields=dict(record),
    )


# Only an order that does not exist is "not found": "merchant not exist" or "appid not found"
# is the account's setup failing, which a poll must report, not count as an answer.
_NOT_FOUND = re.compile(
    r"\border\b[^,;.]*\b(?:not exist|not found|does not exist)|\bno (?:such )?order\b"
)
_TRANSIENT_WORDS = ("busy", "frequent", "too many", "timeout", "try again", "later", "exception")
_AUTH_WORDS = ("sign", "partner", "key", "token", "ip", "auth", "permission", "mch_id", "appid")


def query_error(code: str, message: str) -> QueryError:
    """The `QueryError` a non-zero reply `code` stands for, judged by its message."""
    text = message.lower()
    detail = f"code {code}: {message}"
    if _NOT_FOUND.search(text):
        return QueryNotFound(detail, code)
    if any(word in text for word in _TRANSIENT_WORDS):
        return QueryTransient(detail, code)
    if any(re.search(rf"\b{word}", text) for word in _AUTH_WORDS):
        return QueryAuth(detail, code)
    return QueryPermanent(detail, code)


class MonetaPay(BaseProvider[MonetaPayAccount, str]):
    """MonetaPay callbacks and `/trade/query`."""

    name: ClassVar[str] = "monetapay"
    account_model: ClassVar[type[AccountConfig]] = MonetaPayAccount
    default_trust: ClassVar[Trust] = Trust.SIGNATURE
    ack: ClassVar[Ack] = Ack(200, "application/json", b'{"code":0,"message":"success"}')

    def unwrap(self, raw: RawCallback) -> str:
        """The `en_data` ciphertext; the outer `mch_order_no` is a hint only and is not read."""
        data = load_json_object(raw.body).get("data")
        en_data = data.get("en_data") if isinstance(data, dict) else None
        if not isinstance(en_data, str):
            raise Rejected("malformed", "no data.en_data")
        return en_data

    def open(self, envelope: str, account: MonetaPayAccount) -> Mapping[str, Any]:
        record = decrypt_json(account.aes_key.get_secret_value(), account.aes_iv, envelope)
        verify_record(account.token.get_secret_value(), record)
        return record

    def interpret(
        self, fields: Mapping[str, Any], envelope: str, account: MonetaPayAccount
    ) -> ProviderEvent:
        return record_event(fields, account.trust or self.default_trust)

    def build_query(self, account: MonetaPayAccount, order: OrderRef, now_ms: int) -> HttpRequest:
        timestamp = now_ms // 1000
        unsigned: dict[str, Any] = {
            "mch_id": account.mch_id,
            "appid": account.appid,
            "mch_order_no": order.merchant_order_no,
        }
        sign = sign_fields(account.token.get_secret_value(), unsigned, timestamp)
        plaintext = phpjson.encode(
            {**unsigned, "sign": sign, "timestamp": timestamp}, sort_keys=False
        )
        en_data = aes_encrypt(
            account.aes_key.get_secret_value(), account.aes_iv, plaintext.encode("ascii")
        )
        body = {"data": {"partner_key": account.partner_key, "en_data": en_data}}
        return HttpRequest(
            method="POST",
            url=f"{account.base_url.rstrip('/')}/trade/query",
            headers={"Content-Type": "application/json"},
            body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
        )

    def parse_query_reply(self, account: MonetaPayAccount, reply: HttpReply) -> list[ProviderEvent]:
        """Every record the reply lists, verified; `[]` when MonetaPay lists none (not found).

        A record or plaintext we cannot authenticate raises `QueryAuth` (the keys need an
        operator); one we cannot read raises `QueryPermanent`.
        """
        body = reply_object(reply)
        code = str(body.get("code"))
        if code != "0":
            raise query_error(code, str(body.get("message") or ""))
        trust = account.trust or self.default_trust
        try:
            data = body.get("data")
            if not isinstance(data, dict) or not isinstance(data.get("en_data"), str):
                raise Rejected("malformed", "reply has no data.en_data")
            key, iv = account.aes_key.get_secret_value(), account.aes_iv
            records = decrypt_json(key, iv, data["en_data"]).get("list")
            if not isinstance(records, list):
                raise Rejected("malformed", "reply plaintext has no list")
            return [self._listed_event(account, record, trust) for record in records]
        except Rejected as exc:
            if exc.reason in ("bad_signature", "decrypt_failed"):
                raise QueryAuth(f"reply failed authentication: {exc}", exc.reason) from exc
            raise QueryPermanent(f"unusable reply: {exc}", exc.reason) from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            raise QueryPermanent(f"unusable reply: {exc}", "malformed") from exc

    def _listed_event(
        self, account: MonetaPayAccount, record: object, trust: Trust
    ) -> ProviderEvent:
        if not isinstance(record, dict):
            raise Rejected("malformed", "list item is not an object")
        verify_record(account.token.get_secret_value(), record)
        return record_event(record, trust)
