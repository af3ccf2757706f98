"""The SSSMS88 SMS client (seed 004): signed login, the bearer token kept and renewed on 401,
sends batched by 1000 numbers, and the merchant's credit balance.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import weakref
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from providers import urls
from providers.base import HttpReply, HttpRequest, QueryTransport
from providers.errors import QueryAuth, QueryPermanent, QueryTransient
from providers.http import QueryHttp

log = structlog.get_logger(__name__)

LOGIN_PATH = "/api/apiAuthLogin"
MERCHANT_PATH = "/api/merchant/me"
SEND_PATH = "/api/sms/send"
MAX_NUMBERS_PER_SEND = 1000
#: Seed 004: "country code + number (e.g., 60123456789)"; E.164 allows at most 15 digits.
PHONE_NUMBER = re.compile(r"[0-9]{8,15}")  # fullmatch: ASCII digits, no trailing newline
# Seed 004 asks for Content-Type only; Accept keeps a Laravel/Sanctum backend from answering
# an expired token with a redirect to a login page instead of a JSON 401.
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class SmsConfig(BaseModel):
    """The `[notify.sssms88]` table of the providers file (CONTRACT §2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    username: str
    password: SecretStr
    api_key: SecretStr
    api_secret: SecretStr
    account_code: str
    alert_numbers: list[str] = Field(min_length=1)
    low_credit: Decimal = Field(ge=0)

    _base_url = field_validator("base_url")(urls.base_url)

    @field_validator("alert_numbers")
    @classmethod
    def _phone_numbers(cls, value: list[str]) -> list[str]:
        for number in value:
            if not PHONE_NUMBER.fullmatch(number):
                raise ValueError(f"{mask_number(number)}: country code + number, digits only")
        return value


def login_signature(api_secret: str, username: str, password: str, api_key: str) -> str:
    """Seed 004: base64 HMAC-SHA256 keyed by the API secret over the fixed-order login string."""
    sign_string = f"username={username}&password={password}&apiKey={api_key}"
    digest = hmac.new(api_secret.encode(), sign_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def mask_number(number: str) -> str:
    """A phone number with every character but the last four replaced by `*`."""
    return "*" * max(len(number) - 4, 0) + number[-4:]


class _Envelope(BaseModel):
    """Seed 004's response wrapper: `status` 1 is success, 0 an error named by `message`."""

    model_config = ConfigDict(extra="allow")

    status: int
    message: str = ""
    data: Any = None


class _Business(BaseModel):
    credit: Decimal


class _MerchantUser(BaseModel):
    merchant: _Business


class _MerchantMe(BaseModel):
    merchant: _MerchantUser


def _parse(reply: HttpReply, what: str) -> _Envelope:
    """The reply's envelope; a 5xx/429 a custom transport let through is still transient."""
    if reply.status == 429 or reply.status >= 500:
        raise QueryTransient(f"sssms88 {what}: HTTP {reply.status}", code=f"http_{reply.status}")
    try:
        return _Envelope.model_validate(json.loads(reply.body))
    except (ValueError, ValidationError) as exc:
        raise QueryPermanent(
            f"sssms88 {what}: unreadable reply (HTTP {reply.status})", code=f"http_{reply.status}"
        ) from exc


def _is_unauthorized(reply: HttpReply) -> bool:
    if reply.status == 401:
        return True
    try:
        envelope = _Envelope.model_validate(json.loads(reply.body))
    except (ValueError, ValidationError):
        return False
    return envelope.status == 0 and envelope.message.strip().lower() == "unauthorized"


class Sssms88Client:
    """Talks to one SSSMS88 merchant account through a `QueryTransport` (timeouts, retries).

    Sends are at least once: a transient failure is retried by the transport and, failing
    that, by the caller, so a recipient may rarely get an alert twice but never silently none.
    """

    def __init__(self, config: SmsConfig, transport: QueryTransport) -> None:
        self.config = config
        self._transport = transport
        self._token: str | None = None
        # asyncio locks bind to one loop; a client reused across asyncio.run calls needs one each.
        self._login_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_http(
        cls, config: SmsConfig, http: QueryHttp, rate_per_s: float = 5.0
    ) -> Sssms88Client:
        """A client on the shared HTTP layer, rate-limited per SSSMS88 username."""
        return cls(config, http.for_account(f"sssms88:{config.username}", rate_per_s))

    @property
    def alert_numbers(self) -> Sequence[str]:
        return self.config.alert_numbers

    async def login(self) -> None:
        """Log in and keep the bearer token; `QueryAuth` when the account refuses us."""
        cfg = self.config
        password, api_key = cfg.password.get_secret_value(), cfg.api_key.get_secret_value()
        body = {
            "username": cfg.username,
            "password": password,
            "apiKey": api_key,
            "signature": login_signature(
                cfg.api_secret.get_secret_value(), cfg.username, password, api_key
            ),
        }
        reply = await self._transport.send(
            HttpRequest("POST", cfg.base_url + LOGIN_PATH, JSON_HEADERS, json.dumps(body).encode())
        )
        envelope = _parse(reply, "login")
        if envelope.status != 1 or not 200 <= reply.status < 300:
            log.warning("sms_login_refused", http_status=reply.status, message=envelope.message)
            raise QueryAuth(f"sssms88 login refused: {envelope.message}", code="login_refused")
        token = envelope.data.get("accessToken") if isinstance(envelope.data, dict) else None
        if not isinstance(token, str) or not token:
            raise QueryPermanent("sssms88 login: reply has no data.accessToken", code="no_token")
        self._token = token
        log.info("sms_login_ok")

    async def send(self, numbers: Sequence[str], message: str) -> None:
        """Send `message` to every number, at most 1000 numbers per call, in order."""
        recipients = [number.strip() for number in numbers]
        if not recipients:
            raise ValueError("no recipients")
        for number in recipients:
            if not PHONE_NUMBER.fullmatch(number):
                raise ValueError(f"not a phone number: {mask_number(number)}")
        if not message.strip():
            raise ValueError("empty message")
        self._refuse_secrets(message)
        for start in range(0, len(recipients), MAX_NUMBERS_PER_SEND):
            batch = recipients[start : start + MAX_NUMBERS_PER_SEND]
            payload = {
                "accountCode": self.config.account_code,
                "phoneNumbers": ",".join(batch),
                "content": message,
            }
            await self._call("POST", SEND_PATH, payload)
            log.info(
                "sms_sent",
                recipients=len(batch),
                sample=[mask_number(n) for n in batch[:3]],
                chars=len(message),
            )

    async def credit(self) -> Decimal:
        """The merchant's credit balance (`data.merchant.merchant.credit`)."""
        envelope = await self._call("GET", MERCHANT_PATH, None)
        try:
            return _MerchantMe.model_validate(envelope.data).merchant.merchant.credit
        except ValidationError as exc:
            raise QueryPermanent(
                "sssms88 merchant/me: no credit in reply", code="bad_reply"
            ) from exc

    # -- internals ------------------------------------------------------------------------------
    def _refuse_secrets(self, message: str) -> None:
        cfg = self.config
        secrets = [cfg.password, cfg.api_key, cfg.api_secret]
        values = [s.get_secret_value() for s in secrets] + [self._token or ""]
        if any(len(value) >= 4 and value in message for value in values):
            raise ValueError("refusing to send a message that contains an SSSMS88 credential")

    async def _call(self, method: str, path: str, payload: dict[str, str] | None) -> _Envelope:
        """One authorized call; on 401 log in again once (unless another call already did)."""
        token = self._token or await self._relogin(stale=None)
        reply = await self._authorized(method, path, payload, token)
        if _is_unauthorized(reply):
            log.info("sms_token_refused", path=path)
            token = await self._relogin(stale=token)
            reply = await self._authorized(method, path, payload, token)
            if _is_unauthorized(reply):
                raise QueryAuth(f"sssms88 {path}: fresh token refused", code="unauthorized")
        envelope = _parse(reply, path)
        if envelope.status != 1 or not 200 <= reply.status < 300:
            raise QueryPermanent(f"sssms88 {path}: {envelope.message}", code=f"http_{reply.status}")
        return envelope

    async def _relogin(self, stale: str | None) -> str:
        lock = self._login_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if self._token is None or self._token == stale:
                await self.login()
            assert self._token is not None  # set by login() or it raised
            return self._token

    async def _authorized(
        self, method: str, path: str, payload: dict[str, str] | None, token: str
    ) -> HttpReply:
        headers = {**JSON_HEADERS, "Authorization": f"Bearer {token}"}
        body = json.dumps(payload).encode() if payload is not None else b""
        return await self._transport.send(
            HttpRequest(method, self.config.base_url + path, headers, body)
        )
