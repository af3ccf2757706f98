"""The read/admin API under /api: bearer token; with no token configured, 503, never open."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from ledger.apply import storable_text
from ledger.models import Callback, ReconcileRun
from ledger.money import to_minor
from ledger.orders import OrderConflict, OrderSpec, register_order
from ledger.replay import Replay, reset_for_replay
from ledger.status import Kind
from ledger.views import (
    balances,
    callback_summary,
    find_order,
    iso,
    list_callbacks,
    order_json,
)
from payhook.logs import MASK, is_secret, mask_text

log = structlog.get_logger(__name__)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking database work off the event loop."""
    return await asyncio.to_thread(fn)


def _session(request: web.Request) -> Session:
    from ingest.app import ENGINE

    return Session(request.app[ENGINE], expire_on_commit=False)


def authorized(handler: Handler) -> Handler:
    """`handler` behind the bearer token. Every /api route is added through this (`add_routes`),
    not through a middleware: an app with any middleware runs it, and aiohttp's own per-app
    middleware, on every request, and the callback route is the hot path (at saturation the
    middleware chain cost ~15 % of the ack rate)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        from ingest.app import SETTINGS

        token = request.app[SETTINGS].api_token
        if token is None:
            return web.json_response(
                {"error": "API disabled: PAYHOOK_API_TOKEN is not set"}, status=503
            )
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        # aiohttp keeps a header's bytes that are not UTF-8 as surrogates: encode them back, so a
        # near-miss is a 401 (not a 500 whose error log would carry the header).
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    return guarded


class OrderIn(BaseModel):
    """POST /api/orders body."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    account: str = "default"
    merchant_order_no: str = Field(min_length=1, max_length=128)
    kind: Kind
    amount: Decimal = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    provider_order_no: str | None = Field(default=None, max_length=128)
    customer_phone: str | None = Field(default=None, max_length=32)

    @field_validator("provider", "account", "merchant_order_no", "provider_order_no",
                     "customer_phone")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        """PostgreSQL's text refuses a NUL, and UTF-8 a lone surrogate: a 400, not a 500."""
        if value is not None and not storable_text(value):
            raise ValueError("holds a NUL or a character UTF-8 cannot encode")
        return value


class ReconcileIn(BaseModel):
    """POST /api/reconcile body (optional): which provider and account to pass over."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = Field(default=None, max_length=32)
    account: str | None = Field(default=None, max_length=64)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def post_order(request: web.Request) -> web.Response:
    from ingest.app import ACCOUNTS

    try:
        payload = await _json_body(request, parse_float=Decimal)
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
    except (ValueError, ValidationError, UnicodeDecodeError) as exc:
        return _bad_request(str(exc).splitlines()[0][:300])
    account = request.app[ACCOUNTS].get(spec.provider, spec.account)
    if account is None:
        return _bad_request(f"unknown provider account {spec.provider}/{spec.account}")
    now = datetime.now(UTC)
    spec = replace(spec, next_poll_at=now + timedelta(seconds=account.config.stale_after_s))
    if spec.amount_minor == 0 and spec.kind is not Kind.STATIC_VA:
        return _bad_request("amount must be positive (only a static_va may be open-amount)")

    def work() -> tuple[int, dict[str, Any]]:
        with _session(request) as session, session.begin():
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
        with _session(request) as session:
            order = find_order(session, provider, account, order_no)
            return None if order is None else order_json(session, order)

    body = await in_thread(work)
    if body is None:
        return web.json_response({"error": "order not found"}, status=404)
    return web.json_response(body)


async def get_callbacks(request: web.Request) -> web.Response:
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        return _bad_request("limit must be an integer")
    state, provider = request.query.get("state"), request.query.get("provider")

    def work() -> list[dict[str, Any]]:
        with _session(request) as session:
            return list_callbacks(session, state=state, provider=provider, limit=limit)

    return web.json_response({"callbacks": await in_thread(work)})


def _row_id(request: web.Request, what: str) -> int:
    """The route's `{id}`; an id no row can have (not a number, or beyond BIGINT) is the same
    JSON 404 as an id with no row."""
    try:
        value = int(request.match_info["id"])
    except ValueError:
        value = 0
    if not 0 < value < 2**63:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"{what} not found"}), content_type="application/json"
        )
    return value


async def _json_body(request: web.Request, **loads: Any) -> Any:
    """The request's JSON body, read as UTF-8 whatever charset its Content-Type names (RFC
    8259); ValueError for a body that is not JSON."""
    try:
        return json.loads((await request.read()).decode("utf-8"), **loads)
    except RecursionError as exc:  # "[[[[…": a body can nest deeper than the parser recurses
        raise ValueError("JSON nested too deeply") from exc


async def get_callback(request: web.Request) -> web.Response:
    callback_id = _row_id(request, "callback")

    def work() -> dict[str, Any] | None:
        with _session(request) as session:
            cb = session.get(Callback, callback_id)
            if cb is None:
                return None
            body = callback_summary(cb)
            # Secrets masked (CONTRACT §3): in the headers, and in the body's own fields (OPay
            # sends its clientAuthKey in both).
            body["headers"] = [[k, MASK if is_secret(k) else v] for k, v in json.loads(cb.headers)]
            body["body"] = mask_text(cb.body.decode("utf-8", errors="replace"))
            body["remote_addr"] = cb.remote_addr
            return body

    body = await in_thread(work)
    if body is None:
        return web.json_response({"error": "callback not found"}, status=404)
    return web.json_response(body)


async def replay_callback(request: web.Request) -> web.Response:
    """Put a stored callback back to `received` and enqueue it: processed again from raw bytes."""
    from ingest.app import DISPATCHER

    callback_id = _row_id(request, "callback")
    def work() -> Replay:
        with _session(request) as session, session.begin():
            return reset_for_replay(session, ids=[callback_id])

    replay = await in_thread(work)
    if replay.in_flight:
        return web.json_response(
            {"error": "callback has not ended yet; it is still being processed"}, status=409
        )
    if not replay.reset:
        return web.json_response({"error": "callback not found"}, status=404)
    request.app[DISPATCHER].submit(replay.reset)
    return web.json_response({"replayed": replay.reset}, status=202)


async def post_reconcile(request: web.Request) -> web.Response:
    """Queue a reconciliation pass; its report appears under /api/reconcile/runs/{id}."""
    from ingest.app import CELERY
    from payhook.broker import RECONCILE_TASK

    reconcile_in = ReconcileIn()  # no body: every provider and account
    try:
        if await request.read():
            reconcile_in = ReconcileIn.model_validate(await _json_body(request))
    except ValidationError as exc:
        return _bad_request(str(exc).splitlines()[0][:300])
    except ValueError:
        return _bad_request("body must be JSON")
    provider, account = reconcile_in.provider, reconcile_in.account

    def work() -> int:
        with _session(request) as session, session.begin():
            run = ReconcileRun(
                started_at=datetime.now(UTC),
                state="queued",
                provider=provider,
                account=account,
                report="{}",
            )
            session.add(run)
            session.flush()
            return run.id

    run_id = await in_thread(work)
    celery = request.app[CELERY]
    try:
        await in_thread(
            lambda: celery.send_task(
                RECONCILE_TASK, kwargs={"run_id": run_id, "provider": provider, "account": account}
            )
        )
    except Exception as exc:  # the broker is away: say so, and leave no run queued for ever
        log.error("reconcile_not_queued", run_id=run_id, error=type(exc).__name__)

        def fail() -> None:
            with _session(request) as session, session.begin():
                run = session.get_one(ReconcileRun, run_id)
                run.state, run.finished_at = "failed", datetime.now(UTC)
                run.report = json.dumps({"error": "broker unavailable"})

        await in_thread(fail)
        return web.json_response({"id": run_id, "state": "failed",
                                  "error": "broker unavailable; retry later"}, status=503)
    return web.json_response({"id": run_id, "state": "queued"}, status=202)


async def get_reconcile_run(request: web.Request) -> web.Response:
    run_id = _row_id(request, "run")

    def work() -> dict[str, Any] | None:
        with _session(request) as session:
            run = session.get(ReconcileRun, run_id)
            if run is None:
                return None
            return {
                "id": run.id,
                "state": run.state,
                "started_at": iso(run.started_at),
                "finished_at": iso(run.finished_at),
                "provider": run.provider,
                "account": run.account,
                "report": json.loads(run.report),
            }

    body = await in_thread(work)
    if body is None:
        return web.json_response({"error": "run not found"}, status=404)
    return web.json_response(body)


async def get_balances(request: web.Request) -> web.Response:
    def work() -> list[dict[str, Any]]:
        with _session(request) as session:
            return balances(session)

    return web.json_response({"balances": await in_thread(work)})


def add_routes(app: web.Application) -> None:
    """The /api routes, each behind the bearer token."""
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/api/orders", post_order),
        ("GET", "/api/orders/{provider}/{merchant_order_no}", get_order),
        ("GET", "/api/callbacks", get_callbacks),
        ("GET", "/api/callbacks/{id}", get_callback),
        ("POST", "/api/callbacks/{id}/replay", replay_callback),
        ("POST", "/api/reconcile", post_reconcile),
        ("GET", "/api/reconcile/runs/{id}", get_reconcile_run),
        ("GET", "/api/ledger/balances", get_balances),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, authorized(handler))
