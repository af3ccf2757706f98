"""/api/orders and /api/ledger/balances: registering expected orders, reading them back."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.api.common import bad_request, db_session, found, in_thread, json_body
from ledger.fields import storable_text
from ledger.money import to_minor
from ledger.orders import OrderConflict, OrderSpec, register_order
from ledger.status import Kind
from ledger.views import balances, find_order, order_json

_PLAIN_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
_AMOUNT_FORM = 'amount must be a decimal string of ASCII digits like "300.00" (or an integer)'


class OrderIn(BaseModel):
    """POST /api/orders body."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    account: str = "default"
    merchant_order_no: str = Field(min_length=1, max_length=128)
    kind: Kind
    amount: Decimal
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    provider_order_no: str | None = Field(default=None, max_length=128)
    customer_phone: str | None = Field(default=None, max_length=32)

    @field_validator("amount", mode="before")
    @classmethod
    def _plain_amount(cls, value: object) -> Decimal:
        """Only plain digits, with an optional point and digits: Decimal alone would take
        "1_000", " 300.00 ", Arabic-Indic digits and "1e2". A JSON number is held to its exact
        value, read exactly (the body is parsed with `parse_float=Decimal`, so never a float's
        binary artefact): an integer or a decimal whose exact value is written plainly (1e2 reads
        as 1E+2 and is refused, 300.5e0 reads as 300.5 and is taken)."""
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise ValueError(_AMOUNT_FORM)
        if _PLAIN_AMOUNT.fullmatch(str(value)) is None:
            raise ValueError(_AMOUNT_FORM)
        return Decimal(str(value))

    @field_validator("provider", "account", "merchant_order_no", "provider_order_no",
                     "customer_phone")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        """PostgreSQL's text refuses a NUL, and UTF-8 a lone surrogate: a 400, not a 500."""
        if value is not None and not storable_text(value):
            raise ValueError("holds a NUL or a character UTF-8 cannot encode")
        return value


async def post_order(request: web.Request) -> web.Response:
    from ingest.app import ACCOUNTS

    try:
        payload = await json_body(request, parse_float=Decimal)
        order_in = OrderIn.model_validate(payload)
        currency = order_in.currency.upper()
        spec = OrderSpec(
            provider=order_in.provider,
            account=order_in.account,
            merchant_order_no=order_in.merchant_order_no,
            kind=order_in.kind,
            amount_minor=to_minor(order_in.amount, currency),
            currency=currency,
            provider_order_no=order_in.provider_order_no,
            customer_phone=order_in.customer_phone,
        )
    except ValidationError as exc:
        if any(error["loc"][:1] == ("amount",) for error in exc.errors()):
            return bad_request(_AMOUNT_FORM)
        return bad_request(str(exc).splitlines()[0][:300])
    except (ValueError, UnicodeDecodeError) as exc:
        return bad_request(str(exc).splitlines()[0][:300])
    account = request.app[ACCOUNTS].get(spec.provider, spec.account)
    if account is None:
        return bad_request(f"unknown provider account {spec.provider}/{spec.account}")
    now = datetime.now(UTC)
    spec = replace(spec, next_poll_at=now + timedelta(seconds=account.config.stale_after_s))
    if spec.amount_minor == 0 and spec.kind is not Kind.STATIC_VA:
        return bad_request("amount must be positive (only a static_va may be open-amount)")

    def work() -> tuple[int, dict[str, Any]]:
        with db_session(request) as session, session.begin():
            try:
                order, created = register_order(session, spec, now)
            except OrderConflict:
                return 409, {"error": "order exists with different fields"}
            return (201 if created else 200), order_json(session, order)

    status, body = await in_thread(work)
    return web.json_response(body, status=status)


async def get_order(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    order_no = request.match_info["merchant_order_no"]
    # CONTRACT §2: `default` is the account of the routes that name none. Another account's
    # order of the same number is never answered in its place.
    account = request.query.get("account") or "default"

    def work() -> dict[str, Any] | None:
        with db_session(request) as session:
            order = find_order(session, provider, account, order_no)
            return None if order is None else order_json(session, order)

    return await found("order", work)


async def get_balances(request: web.Request) -> web.Response:
    def work() -> list[dict[str, Any]]:
        with db_session(request) as session:
            return balances(session)

    return web.json_response({"balances": await in_thread(work)})

