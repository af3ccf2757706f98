"""The operational surface: metrics, readiness, API authentication, order registration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_request import Request

from ingest.app import create_app
from ledger.db import make_engine
from payhook.accounts import Accounts, load_accounts
from payhook.broker import make_celery
from payhook.embedded import free_port
from payhook.settings import Settings
from tests.conftest import queue_name, unique
from tests.harness import API_TOKEN, Stack, exchange, http


def test_metrics_expose_the_pipeline(stack: Stack) -> None:
    """/metrics counts acks per provider and shows the oldest non-final callback's age."""
    fields = stack.world.fields("opay", unique(), "succeeded", "1.00")
    stack.post(stack.world.callback("opay", fields))
    status, body = http("GET", stack.url + "/metrics")
    text = body.decode()
    assert status == 200
    assert 'payhook_callbacks_acknowledged_total{provider="opay"}' in text
    assert "payhook_ack_latency_seconds_bucket" in text
    assert "payhook_oldest_unfinished_callback_age_seconds" in text
    # The stack is shared by the module's tests: at least this callback's commit is counted.
    commits = [line for line in text.splitlines()
               if line.startswith("payhook_inbox_commit_seconds_count")]
    assert commits
    assert float(commits[0].split()[-1]) >= 1
    assert "payhook_inbox_group_rows_bucket" in text


def test_readyz_checks_database_and_redis(stack: Stack) -> None:
    """/readyz answers 200 only with both the database and Redis reachable."""
    status, body = http("GET", stack.url + "/readyz")
    assert status == 200
    assert b'"database": "ok"' in body
    assert b'"redis": "ok"' in body


def test_api_requires_the_bearer_token(stack: Stack) -> None:
    """/api without the right bearer token is 401."""
    assert exchange("GET", stack.url + "/api/callbacks")[0] == 401
    headers = {"Authorization": "Bearer wrong"}
    assert exchange("GET", stack.url + "/api/callbacks", headers=headers)[0] == 401


@contextlib.asynccontextmanager
async def _own_receiver(
    stack: Stack, database_url: str, redis_url: str, token: str | None,
    accounts: Accounts | None = None,
) -> AsyncIterator[tuple[web.Application, TestClient[Request, web.Application]]]:
    """A receiver of the test's own (its API token and accounts as given) and a client for it;
    by default, the stack's accounts."""
    settings = Settings(database_url=database_url, redis_url=redis_url, api_token=token,
                        queue=queue_name("payhook-api"))
    engine = make_engine(database_url)
    accounts = accounts or load_accounts(stack.workdir / "payhook.toml")
    app = create_app(settings, accounts, engine, make_celery(settings))
    try:
        async with TestClient(TestServer(app)) as client:
            yield app, client
    finally:
        engine.dispose()


def test_api_is_closed_without_a_configured_token(
    stack: Stack, database_url: str, redis_url: str,
) -> None:
    """With no PAYHOOK_API_TOKEN the API answers 503, never open; callbacks still work."""

    async def run() -> tuple[int, int]:
        async with _own_receiver(stack, database_url, redis_url, None) as (_, client):
            api = (await client.get("/api/callbacks")).status
            request = stack.world.callback(
                "otgpay", stack.world.fields("otgpay", unique(), "succeeded", "1.00"))
            cb = (await client.post(request.url, data=request.body,
                                    headers=dict(request.headers))).status
        return api, cb

    assert asyncio.run(run()) == (503, 200)


@pytest.mark.parametrize(("token", "refused"), [(None, 503), ("right", 401)])
def test_every_api_route_is_guarded(
    stack: Stack, database_url: str, redis_url: str, token: str | None, refused: int,
) -> None:
    """Each /api route, whatever its method, refuses a request without the right token: 503
    with no token configured, 401 with one (the guard is per route, so a new route that
    skipped it would show here)."""

    async def run() -> dict[str, int]:
        answers: dict[str, int] = {}
        async with _own_receiver(stack, database_url, redis_url, token) as (app, client):
            for route in app.router.routes():
                path = route.resource.canonical if route.resource is not None else ""
                if not path.startswith("/api/") or route.method == "HEAD":
                    continue
                url = re.sub(r"\{[^}]+\}", "1", path)
                reply = await client.request(route.method, url,
                                             headers={"Authorization": "Bearer wrong"})
                answers[f"{route.method} {path}"] = reply.status
        return answers

    answers = asyncio.run(run())
    assert len(answers) >= 8
    assert answers == dict.fromkeys(answers, refused)


def test_order_registration_repeats(stack: Stack) -> None:
    """Registering: 201 new, 200 identical repeat, 409 when a field differs, 400 when invalid."""
    order = {"provider": "opay", "merchant_order_no": unique(), "kind": "payment",
             "amount": "12.50", "currency": "NGN", "customer_phone": "2348000000000"}
    assert stack.api("POST", "/api/orders", order)[0] == 201
    assert stack.api("POST", "/api/orders", {**order, "customer_phone": "1"})[0] == 200
    assert stack.api("POST", "/api/orders", {**order, "amount": "12.51"})[0] == 409
    assert stack.api("POST", "/api/orders", {**order, "amount": "1.001"})[0] == 400
    assert stack.api("POST", "/api/orders", {**order, "provider": "nopay"})[0] == 400
    status, body = stack.api("GET", f"/api/orders/opay/{order['merchant_order_no']}")
    assert (status, body["amount"], body["status"]) == (200, "12.50", "pending")
    assert stack.api("GET", "/api/orders/opay/NOPE")[0] == 404


def test_an_order_lookup_without_an_account_is_the_default_accounts(
    stack: Stack, database_url: str, redis_url: str,
) -> None:
    """GET /api/orders/{provider}/{no} without `?account=` answers for the `default` account
    (CONTRACT §2), never another account's order of the same number."""
    stacked = load_accounts(stack.workdir / "payhook.toml")
    opay = stacked.get("opay")
    assert opay is not None
    second = replace(opay, name="second")
    accounts = replace(stacked, by_key={**stacked.by_key, ("opay", "second"): second})
    number, headers = unique(), {"Authorization": f"Bearer {API_TOKEN}"}
    order = {"provider": "opay", "account": "second", "merchant_order_no": number,
             "kind": "payment", "amount": "7.00", "currency": "NGN"}

    async def run() -> list[tuple[int, str | None]]:
        answers: list[tuple[int, str | None]] = []
        async with _own_receiver(stack, database_url, redis_url, API_TOKEN, accounts) as (
                _, client):

            async def lookup(query: str) -> None:
                reply = await client.get(f"/api/orders/opay/{number}{query}", headers=headers)
                body = await reply.json()
                answers.append((reply.status, body.get("account")))

            assert (await client.post("/api/orders", json=order, headers=headers)).status == 201
            for query in ("", "?account=", "?account=second"):
                await lookup(query)
            default = {**order, "account": "default", "amount": "9.00"}
            assert (await client.post("/api/orders", json=default, headers=headers)).status == 201
            for query in ("", "?account=second", "?account=nope"):
                await lookup(query)
        return answers

    assert asyncio.run(run()) == [
        (404, None), (404, None), (200, "second"),
        (200, "default"), (200, "second"), (404, None),
    ]


def test_a_repeat_registration_is_still_identical_after_a_callback(stack: Stack) -> None:
    """A callback fills in the provider's order number the registration left out; the
    merchant's retry of the same registration is still an identical repeat (200), and one
    that names another provider order number is a conflict (409)."""
    number = unique()
    order = {"provider": "opay", "merchant_order_no": number, "kind": "payment",
             "amount": "12.50", "currency": "NGN"}
    assert stack.api("POST", "/api/orders", order)[0] == 201
    fields = stack.world.fields("opay", number, "succeeded", "12.50")
    _, _, callback_id = stack.post(stack.world.callback("opay", fields))
    assert stack.wait_final([callback_id])[0]["state"] == "applied"
    status, body = stack.api("GET", f"/api/orders/opay/{number}")
    assert (status, body["provider_order_no"]) == (200, fields["orderNo"])
    assert stack.api("POST", "/api/orders", order)[0] == 200
    assert stack.api("POST", "/api/orders", {**order, "provider_order_no": fields["orderNo"]})[
        0] == 200
    assert stack.api("POST", "/api/orders", {**order, "provider_order_no": "OTHER"})[0] == 409


@pytest.mark.parametrize(("registered", "paid", "reasons"), [
    ("300.00", "100.00", ["unregistered_order", "amount_mismatch"]),
    ("100.00", "100.00", ["unregistered_order"]),
])
def test_registering_an_order_a_callback_paid_first_checks_what_was_paid(
    stack: Stack, registered: str, paid: str, reasons: list[str]
) -> None:
    """A payment that arrived before the merchant registered its order is held against the
    registration as it would have been on arrival: another amount flags `amount_mismatch`."""
    number = unique()
    fields = stack.world.fields("opay", number, "succeeded", paid)
    _, _, callback_id = stack.post(stack.world.callback("opay", fields))
    assert stack.wait_final([callback_id])[0]["state"] == "applied"
    order = {"provider": "opay", "merchant_order_no": number, "kind": "payment",
             "amount": registered, "currency": "NGN"}
    assert stack.api("POST", "/api/orders", order)[0] == 201
    assert stack.api("POST", "/api/orders", order)[0] == 200
    status, body = stack.api("GET", f"/api/orders/opay/{number}")
    assert status == 200
    assert (body["amount"], body["paid_amount"], body["status"]) == (registered, paid,
                                                                     "succeeded")
    assert (body["review_reasons"], body["needs_review"]) == (reasons, True)


def test_callback_detail_masks_secrets_in_headers_and_body(stack: Stack) -> None:
    """OPay sends its clientAuthKey as a header and again in the body: the API shows neither
    (nor the signature, masked like the signature headers), and the rest of the body as
    received."""
    request = stack.world.callback("opay", stack.world.fields("opay", unique(), "failed", "2.00"))
    secret = stack.world.secrets["opay_client_auth_key"]
    assert secret in request.body.decode()
    _, _, callback_id = stack.post(request)
    status, detail = stack.api("GET", f"/api/callbacks/{callback_id}")
    assert status == 200
    assert secret not in json.dumps(detail)
    assert ["clientauthkey", "***"] in [[k.lower(), v] for k, v in detail["headers"]]
    sign = json.loads(request.body)["sign"]
    assert detail["body"] == request.body.decode().replace(secret, "***").replace(sign, "***")


def _logged_from_now(stack: Stack) -> Callable[[], bytes]:
    """A function that returns what the receiver has logged since this call (after a moment,
    so that what it logs about a request just answered is written)."""
    log = stack.workdir / "receiver.log"
    mark = log.stat().st_size

    def since() -> bytes:
        time.sleep(0.2)
        with log.open("rb") as fh:
            fh.seek(mark)
            return fh.read()

    return since


def test_a_token_with_bytes_not_utf8_is_refused_and_not_logged(stack: Stack) -> None:
    """The right token with one stray byte is a plain 401: no error, and so no log line that
    would carry the header's value."""
    logged = _logged_from_now(stack)
    host, port = stack.url.removeprefix("http://").split(":")
    request = (b"GET /api/callbacks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Authorization: Bearer " + API_TOKEN.encode() + b"\xff\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1] == b"401"
    assert API_TOKEN.encode() not in logged()


ORDER = {"provider": "opay", "merchant_order_no": "API-BAD", "kind": "payment",
         "amount": "3.00", "currency": "NGN"}
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), [
    ("GET", "/api/callbacks/99999999999999999999", None, {}, 404),
    ("GET", "/api/callbacks/0", None, {}, 404),
    ("GET", "/api/callbacks/abc", None, {}, 404),
    ("POST", "/api/callbacks/9223372036854775808/replay", None, {}, 404),
    ("GET", "/api/reconcile/runs/99999999999999999999", None, {}, 404),
    ("POST", "/api/orders", {**ORDER, "amount": "1e30"}, JSON_TYPE, 400),
    ("POST", "/api/orders", ORDER, {"Content-Type": "application/json; charset=bogus"}, 201),
    ("POST", "/api/orders", b"\xff{}", JSON_TYPE, 400),
    ("POST", "/api/reconcile", b"[]", JSON_TYPE, 400),
    ("POST", "/api/reconcile", b'"x"', JSON_TYPE, 400),
    ("POST", "/api/reconcile", {"provider": {"a": 1}}, JSON_TYPE, 400),
    ("POST", "/api/reconcile", {"provder": "opay"}, JSON_TYPE, 400),
    ("POST", "/api/reconcile", b"{}", {"Content-Type": "application/json; charset=bogus"}, 202),
    ("POST", "/api/orders", b"[" * 50_000, JSON_TYPE, 400),
    ("POST", "/api/reconcile", b"[" * 50_000, JSON_TYPE, 400),
    ("POST", "/api/orders", {**ORDER, "amount": "1e999999999"}, JSON_TYPE, 400),
    ("POST", "/api/orders", json.dumps({**ORDER, "merchant_order_no": "A\u0000B"}).encode(),
     JSON_TYPE, 400),
    ("POST", "/api/orders", json.dumps({**ORDER, "merchant_order_no": "A\ud800"}).encode(),
     JSON_TYPE, 400),
    ("POST", "/api/orders", json.dumps({**ORDER, "provider_order_no": "P\u0000"}).encode(),
     JSON_TYPE, 400),
])
def test_api_answers_bad_input_with_a_client_error(
    stack: Stack, method: str, path: str, body: object, headers: dict[str, str], status: int,
) -> None:
    """Ids no row can have, amounts no ledger can hold (however large their exponent), bodies
    of the wrong shape or charset or nested deeper than a parser recurses, strings PostgreSQL's
    text refuses: each gets its 4xx with a JSON error (or is read as the UTF-8 that JSON is),
    never a 500."""
    if isinstance(body, dict) and "merchant_order_no" in body:  # a new order each run
        body = {**body, "merchant_order_no": unique()}
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    got, reply = http(method, stack.url + path, body=raw,
                      headers={"Authorization": f"Bearer {API_TOKEN}", **headers})
    assert got == status, reply[:300]
    if status >= 400:
        assert json.loads(reply)["error"], reply[:300]


def test_callbacks_refused_by_route_are_logged_with_a_reason(stack: Stack) -> None:
    """An unknown provider or account (404) and a method other than POST (405) are answered,
    and each leaves a log line saying why."""
    logged = _logged_from_now(stack)
    assert http("POST", stack.url + "/callbacks/nosuchpay", body=b"{}")[0] == 404
    assert http("POST", stack.url + "/callbacks/opay/nosuchaccount", body=b"{}")[0] == 404
    status, _, headers = exchange("GET", stack.url + "/callbacks/opay")
    assert (status, headers.get("Allow")) == (405, "POST")
    lines = [json.loads(line) for line in logged().splitlines() if line.startswith(b"{")]
    refused = [(e["event"], e.get("provider"), e.get("account"), e.get("method"))
               for e in lines if e["event"].startswith("callback_")]
    assert refused == [("callback_unknown_account", "nosuchpay", "default", None),
                       ("callback_unknown_account", "opay", "nosuchaccount", None),
                       ("callback_wrong_method", None, None, "GET")]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_callback_is_stored_as_sent_whatever_its_content_encoding(
    stack: Stack, encoding: str
) -> None:
    """The receiver does not decode a body: one whose Content-Encoding does not match it (or
    names a coding nothing here reads) is stored byte for byte and acknowledged, then judged
    by a worker, instead of a 500 or a 400 that stores nothing."""
    body = f'{{"lies": "{unique()}"}}'.encode()
    status, reply, headers = exchange("POST", stack.url + "/callbacks/otgpay", body=body,
                                      headers={"Content-Type": "application/json",
                                               "Content-Encoding": encoding})
    assert (status, reply) == (200, b"SUCCESS")
    callback_id = int(headers["X-Payhook-Callback-Id"])
    assert stack.callback(callback_id)["body"] == body.decode()
    [record] = stack.wait_final([callback_id])
    assert record["state"] == "rejected"


def test_a_reconcile_request_the_broker_cannot_take_fails_plainly(
    stack: Stack, database_url: str
) -> None:
    """With the broker out of reach, POST /api/reconcile answers 503 and its run is `failed`
    with the reason: never a 500, nor a run that stays `queued` for ever."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"

    async def run() -> tuple[int, dict[str, object], dict[str, object]]:
        async with _own_receiver(stack, database_url, dead_broker, API_TOKEN) as (_, client):
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            posted = await client.post("/api/reconcile", headers=auth)
            body = await posted.json()
            stored = await (await client.get(f"/api/reconcile/runs/{body['id']}",
                                             headers=auth)).json()
        return posted.status, body, stored

    status, body, stored = asyncio.run(run())
    assert (status, body["state"]) == (503, "failed")
    assert (stored["state"], stored["report"]) == ("failed", {"error": "broker unavailable"})
