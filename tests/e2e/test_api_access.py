"""Who may use the API: the bearer token on every route, the API closed without one, a token
that is not UTF-8 refused and never logged, secrets masked in what the API shows."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest

from tests.conftest import unique
from tests.e2e.receiver import logged_from_now, own_receiver
from tests.harness import API_TOKEN, Stack, exchange


def test_api_requires_the_bearer_token(stack: Stack) -> None:
    """/api without the right bearer token is 401."""
    assert exchange("GET", stack.url + "/api/callbacks")[0] == 401
    headers = {"Authorization": "Bearer wrong"}
    assert exchange("GET", stack.url + "/api/callbacks", headers=headers)[0] == 401


def test_api_is_closed_without_a_configured_token(
    stack: Stack, database_url: str, redis_url: str,
) -> None:
    """With no PAYHOOK_API_TOKEN the API answers 503, never open; callbacks still work."""

    async def run() -> tuple[int, int]:
        async with own_receiver(stack, database_url, redis_url, None) as (_, client):
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
        async with own_receiver(stack, database_url, redis_url, token) as (app, client):
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


def test_a_token_with_bytes_not_utf8_is_refused_and_not_logged(stack: Stack) -> None:
    """The right token with one stray byte is a plain 401: no error, and so no log line that
    would carry the header's value."""
    logged = logged_from_now(stack)
    host, port = stack.url.removeprefix("http://").split(":")
    request = (b"GET /api/callbacks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Authorization: Bearer " + API_TOKEN.encode() + b"\xff\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1] == b"401"
    assert API_TOKEN.encode() not in logged()
