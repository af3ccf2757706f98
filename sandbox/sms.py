"""A stand-in SSSMS88 server (seed 004): signed login, bearer tokens that can be expired on
demand, recorded sends and a credit balance spent per message, with the seed's reply shapes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

PHONE_NUMBER = re.compile(r"^\d{8,15}$")
MAX_NUMBERS = 1000
QUEUED = "SMS queued for sending. Please wait a moment for the result."


@dataclass(frozen=True)
class SentSms:
    """One accepted `POST /api/sms/send`."""

    account_code: str
    numbers: list[str]
    message: str


@dataclass
class SmsSandbox:
    """The stand-in's state, reachable from the app as `app[SMS_SANDBOX]`."""

    username: str
    password: str
    api_key: str
    api_secret: str
    credit: Decimal
    account_code: str = "SANDBOXAPP"
    cost_per_sms: Decimal = Decimal("0.0500")
    logins: int = 0
    send_requests: int = 0
    fail_sends: int = 0
    sends: list[SentSms] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def issue_token(self) -> str:
        """A Sanctum-style `id|secret` token, valid until expired."""
        token = f"{next(self._ids)}|{secrets.token_urlsafe(36)}"
        self.tokens.add(token)
        return token

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far: the next authorized call gets 401."""
        self.tokens.clear()

    def expected_signature(self, username: str, password: str, api_key: str) -> str:
        sign_string = f"username={username}&password={password}&apiKey={api_key}"
        mac = hmac.new(self.api_secret.encode(), sign_string.encode(), hashlib.sha256)
        return base64.b64encode(mac.digest()).decode("ascii")


SMS_SANDBOX = web.AppKey("sms_sandbox", SmsSandbox)


def _reply(status: int, message: str, data: Any = None, http: int = 200) -> web.Response:
    body = {"status": status, "message": message, "data": [] if data is None else data}
    return web.json_response(body, status=http)


async def _json_fields(
    request: web.Request, names: tuple[str, ...]
) -> dict[str, str] | web.Response:
    """The named string fields of a JSON body, or the error reply to send instead."""
    if request.content_type != "application/json":
        return _reply(0, "Content-Type must be application/json", http=415)
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _reply(0, "Malformed JSON body", http=400)
    if not isinstance(body, dict):
        return _reply(0, "Malformed JSON body", http=400)
    for name in names:
        if not isinstance(body.get(name), str) or not body[name]:
            return _reply(0, f"The {name} field is required.", http=422)
    return {name: body[name] for name in names}


def _authorized(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ")
    return header.startswith("Bearer ") and token in request.app[SMS_SANDBOX].tokens


async def login(request: web.Request) -> web.Response:
    """`POST /api/apiAuthLogin`: signature first, then the credentials."""
    state = request.app[SMS_SANDBOX]
    fields = await _json_fields(request, ("username", "password", "apiKey", "signature"))
    if isinstance(fields, web.Response):
        return fields
    expected = state.expected_signature(fields["username"], fields["password"], fields["apiKey"])
    signed = hmac.compare_digest(expected.encode(), fields["signature"].encode())
    if not signed or not hmac.compare_digest(fields["apiKey"], state.api_key):
        return _reply(0, "Invalid signature", http=401)
    if fields["username"] != state.username or not hmac.compare_digest(
        fields["password"], state.password
    ):
        return _reply(0, "Invalid username / password", http=401)
    state.logins += 1
    return _reply(1, "Login successful", {"accessToken": state.issue_token()})


async def merchant_me(request: web.Request) -> web.Response:
    """`GET /api/merchant/me`: the merchant record with its credit to 4 decimal places."""
    state = request.app[SMS_SANDBOX]
    if not _authorized(request):
        return _reply(0, "Unauthorized", http=401)
    merchant = {
        "id": "c9bc55ba-0000-4000-8000-ff522ca1935e",
        "merchant": {
            "id": "a2fefd78-0000-4000-8000-484897fb8268",
            "merchantCode": "M0001234",
            "credit": str(state.credit.quantize(Decimal("0.0001"))),
        },
        "name": "Sandbox Merchant",
        "username": state.username,
        "email": "merchant@sandbox.invalid",
        "phoneNumber": None,
        "status": 1,
    }
    return _reply(1, "Merchant retrieved successfully", {"merchant": merchant})


async def send_sms(request: web.Request) -> web.Response:
    """`POST /api/sms/send`: up to 1000 comma-separated numbers, credit spent per number."""
    state = request.app[SMS_SANDBOX]
    if not _authorized(request):
        return _reply(0, "Unauthorized", http=401)
    state.send_requests += 1
    if state.fail_sends > 0:
        state.fail_sends -= 1
        return _reply(0, "Service temporarily unavailable", http=503)
    fields = await _json_fields(request, ("accountCode", "phoneNumbers", "content"))
    if isinstance(fields, web.Response):
        return fields
    if fields["accountCode"] != state.account_code:
        return _reply(0, "Merchant Sms Account not found.", http=404)
    numbers = [n.strip() for n in fields["phoneNumbers"].split(",")]
    if len(numbers) > MAX_NUMBERS:
        return _reply(0, f"Maximum {MAX_NUMBERS} phone numbers per request.", http=422)
    if not all(PHONE_NUMBER.match(n) for n in numbers):
        return _reply(0, "Invalid phone number format", http=422)
    cost = state.cost_per_sms * len(numbers)
    if cost > state.credit:
        return _reply(0, "Insufficient credit.", http=422)
    state.credit -= cost
    state.sends.append(SentSms(fields["accountCode"], numbers, fields["content"]))
    return _reply(1, QUEUED)


def create_sms_app(
    username: str,
    password: str,
    api_key: str,
    api_secret: str,
    credit: Decimal,
    *,
    account_code: str = "SANDBOXAPP",
    cost_per_sms: Decimal = Decimal("0.0500"),
) -> web.Application:
    """The stand-in server; its state is `app[SMS_SANDBOX]`."""
    app = web.Application()
    app[SMS_SANDBOX] = SmsSandbox(
        username=username,
        password=password,
        api_key=api_key,
        api_secret=api_secret,
        credit=credit,
        account_code=account_code,
        cost_per_sms=cost_per_sms,
    )
    app.router.add_post("/api/apiAuthLogin", login)
    app.router.add_get("/api/merchant/me", merchant_me)
    app.router.add_post("/api/sms/send", send_sms)
    return app
